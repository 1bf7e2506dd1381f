package bootstrap

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// JWT key files WriteJWTKeys writes in its directory.
const (
	JWTPrivateKey = "jwt-priv.pem"
	JWTPublicKey  = "jwt-pub.pem"
)

// JWTAuthToken is etcd's --auth-token for the key pair in dir.
func JWTAuthToken(dir string) string {
	return fmt.Sprintf("jwt,pub-key=%s,priv-key=%s,sign-method=ES256", filepath.Join(dir, JWTPublicKey), filepath.Join(dir, JWTPrivateKey))
}

// WriteJWTKeys makes the ECDSA P-256 key pair of etcd's JWT auth tokens
// (sign-method ES256) in dir, mode 0600 and 0644, unless dir holds one
// already: every member of a cluster must sign with the same key, so it
// is made once. It reports whether it wrote new keys.
func WriteJWTKeys(dir string) (bool, error) {
	priv := filepath.Join(dir, JWTPrivateKey)
	if _, err := os.Stat(priv); err == nil {
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return false, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return false, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return false, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	if err := os.WriteFile(filepath.Join(dir, JWTPublicKey), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return false, err
	}
	if err := os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return false, err
	}
	return true, nil
}
