package snowflake

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"os"
)

// readPrivateKey reads a PEM PKCS#8 RSA key, as Snowflake's key-pair setup
// generates it: "PRIVATE KEY", or "ENCRYPTED PRIVATE KEY" (PBES2 with
// PBKDF2 and AES-CBC, openssl's default) opened with passphrase.
func readPrivateKey(path string, passphrase []byte) (*rsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("private_key_file: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("private_key_file %s: no PEM block", path)
	}
	der := block.Bytes
	switch block.Type {
	case "PRIVATE KEY":
	case "ENCRYPTED PRIVATE KEY":
		if len(passphrase) == 0 {
			return nil, fmt.Errorf("private_key_file %s is encrypted: set private_key_passphrase_env", path)
		}
		if der, err = decryptPKCS8(der, passphrase); err != nil {
			return nil, fmt.Errorf("private_key_file %s: %w", path, err)
		}
	default:
		return nil, fmt.Errorf("private_key_file %s: PEM type %q, want PKCS#8 (PRIVATE KEY or ENCRYPTED PRIVATE KEY)", path, block.Type)
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("private_key_file %s: %w (wrong passphrase?)", path, err)
	}
	rk, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private_key_file %s: %T is not an RSA key", path, key)
	}
	return rk, nil
}

var (
	oidPBES2      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidHMACSHA1   = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}
	oidHMACSHA256 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidAES128CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES256CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
)

type encryptedPrivateKeyInfo struct {
	Algorithm struct {
		OID    asn1.ObjectIdentifier
		Params pbes2Params
	}
	Data []byte
}

type pbes2Params struct {
	KDF struct {
		OID    asn1.ObjectIdentifier
		Params pbkdf2Params
	}
	Cipher struct {
		OID asn1.ObjectIdentifier
		IV  []byte
	}
}

type pbkdf2Params struct {
	Salt       []byte
	Iterations int
	KeyLength  int `asn1:"optional"`
	PRF        struct {
		OID    asn1.ObjectIdentifier
		Params asn1.RawValue `asn1:"optional"`
	} `asn1:"optional"`
}

func decryptPKCS8(der, passphrase []byte) ([]byte, error) {
	var info encryptedPrivateKeyInfo
	if _, err := asn1.Unmarshal(der, &info); err != nil {
		return nil, fmt.Errorf("parse encrypted key: %w", err)
	}
	p := info.Algorithm.Params
	if !info.Algorithm.OID.Equal(oidPBES2) || !p.KDF.OID.Equal(oidPBKDF2) {
		return nil, errors.New("encrypted key: only PBES2 with PBKDF2 is supported")
	}
	var keyLen int
	switch {
	case p.Cipher.OID.Equal(oidAES128CBC):
		keyLen = 16
	case p.Cipher.OID.Equal(oidAES256CBC):
		keyLen = 32
	default:
		return nil, fmt.Errorf("encrypted key: cipher %v not supported (use AES-128-CBC or AES-256-CBC)", p.Cipher.OID)
	}
	var prf func() hash.Hash
	switch oid := p.KDF.Params.PRF.OID; {
	case len(oid) == 0 || oid.Equal(oidHMACSHA1):
		prf = sha1.New
	case oid.Equal(oidHMACSHA256):
		prf = sha256.New
	default:
		return nil, fmt.Errorf("encrypted key: PRF %v not supported", oid)
	}
	key, err := pbkdf2.Key(prf, string(passphrase), p.KDF.Params.Salt, p.KDF.Params.Iterations, keyLen)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	if len(p.Cipher.IV) != aes.BlockSize || len(info.Data)%aes.BlockSize != 0 || len(info.Data) == 0 {
		return nil, errors.New("encrypted key: malformed ciphertext")
	}
	out := make([]byte, len(info.Data))
	cipher.NewCBCDecrypter(block, p.Cipher.IV).CryptBlocks(out, info.Data)
	pad := int(out[len(out)-1])
	if pad == 0 || pad > aes.BlockSize || pad > len(out) {
		return nil, errors.New("encrypted key: wrong passphrase")
	}
	return out[:len(out)-pad], nil
}
