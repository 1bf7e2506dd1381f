package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// keyPrefix starts every API key, so that a leaked key is easy to spot and
// to scan for.
const keyPrefix = "cft_"

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Key is an API key: the public id and the secret.
type Key struct {
	// ID is 16 characters of [a-z2-7] (80 random bits), safe to log.
	ID string
	// Secret is 43 characters of base64url (256 random bits).
	Secret string
}

// NewKey returns a new random key.
func NewKey() (Key, error) {
	id := make([]byte, 10)
	secret := make([]byte, 32)
	if _, err := rand.Read(id); err != nil {
		return Key{}, fmt.Errorf("auth: new key: %w", err)
	}
	if _, err := rand.Read(secret); err != nil {
		return Key{}, fmt.Errorf("auth: new key: %w", err)
	}
	return Key{ID: idEncoding.EncodeToString(id), Secret: base64.RawURLEncoding.EncodeToString(secret)}, nil
}

// String is the whole key, as clients send it.
func (k Key) String() string { return keyPrefix + k.ID + "_" + k.Secret }

// Hash is the hex SHA-256 of the secret, the only part of it meta stores.
func (k Key) Hash() string { return HashSecret(k.Secret) }

// HashSecret is the hex SHA-256 of a key's secret.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// ParseKey splits a key into its id and secret. It checks the form only,
// not whether the key exists.
func ParseKey(s string) (Key, error) {
	rest, ok := strings.CutPrefix(s, keyPrefix)
	if !ok {
		return Key{}, fmt.Errorf("%w: it does not start with %q", ErrInvalidKey, keyPrefix)
	}
	id, secret, ok := strings.Cut(rest, "_")
	if !ok || id == "" || secret == "" || len(id) > 64 || len(secret) > 128 {
		return Key{}, fmt.Errorf("%w: expected %s<id>_<secret>", ErrInvalidKey, keyPrefix)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return Key{}, fmt.Errorf("%w: expected %s<id>_<secret> with an id of [a-z0-9]", ErrInvalidKey, keyPrefix)
		}
	}
	return Key{ID: id, Secret: secret}, nil
}

// matches reports, in constant time, whether secret hashes to hexHash.
func matches(secret, hexHash string) bool {
	want, err := hex.DecodeString(hexHash)
	if err != nil || len(want) != sha256.Size {
		return false
	}
	got := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(got[:], want) == 1
}
