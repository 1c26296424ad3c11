// Package runid makes the random identifiers of runs, extractions and
// requests: 16 bytes from crypto/rand, hex-encoded, sortable by nothing.
package runid

import (
	"crypto/rand"
	"encoding/hex"
)

// New returns a fresh 32-character identifier.
func New() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}
