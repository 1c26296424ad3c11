// Package apikey makes, hashes and resolves project API keys. Keys are
// stored only as the lower-case hex SHA-256 of the key; the key itself is
// never kept, compared in the clear, or logged.
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"

	"github.com/sluicehq/sluice/pkg/config"
)

// Prefix starts every generated key, so a leaked key is recognisable by
// secret scanners.
const Prefix = "sk_live_"

// keyBytes of randomness make a key: 256 bits.
const keyBytes = 32

// Hash is the stored form of key: lower-case hex SHA-256.
func Hash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// Generate returns a new random key.
func Generate() (string, error) {
	var b [keyBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate api key: %w", err)
	}
	return Prefix + hex.EncodeToString(b[:]), nil
}

// Resolver maps a presented key to its project.
type Resolver struct {
	hashes   [][sha256.Size]byte
	projects []string // projects[i] owns hashes[i]
}

// NewResolver indexes every key hash of projects.
func NewResolver(projects []config.Project) (*Resolver, error) {
	r := &Resolver{}
	for i, p := range projects {
		for j, k := range p.APIKeys {
			raw, err := hex.DecodeString(k.SHA256)
			if err != nil || len(raw) != sha256.Size {
				return nil, fmt.Errorf("projects[%d].api_keys[%d].sha256: not a hex SHA-256", i, j)
			}
			r.hashes = append(r.hashes, [sha256.Size]byte(raw))
			r.projects = append(r.projects, p.Name)
		}
	}
	return r, nil
}

// Resolve returns the project owning key. It compares the key's hash with
// every stored hash in constant time and never stops early, so the time it
// takes says nothing about which key, if any, matched.
func (r *Resolver) Resolve(key string) (project string, ok bool) {
	if key == "" {
		return "", false
	}
	sum := sha256.Sum256([]byte(key))
	match := -1
	for i := range r.hashes {
		eq := subtle.ConstantTimeCompare(sum[:], r.hashes[i][:])
		match = subtle.ConstantTimeSelect(eq, i, match)
	}
	if match < 0 {
		return "", false
	}
	return r.projects[match], true
}
