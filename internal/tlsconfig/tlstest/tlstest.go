// Package tlstest writes a throwaway certificate authority, a server
// certificate for 127.0.0.1 and localhost, and a client certificate, as
// PEM files in a test's temporary directory.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/confetti-io/confetti/internal/tlsconfig"
)

// Certs are the files of one test PKI.
type Certs struct {
	// CA is the authority's certificate, which verifies both sides.
	CA string
	// Server holds the server's certificate and key, and CA.
	Server tlsconfig.Files
	// Client holds the client's certificate and key, and CA.
	Client tlsconfig.Files
}

// New writes a CA and a server and a client certificate signed by it.
// Calling it twice gives two unrelated authorities.
func New(t testing.TB) Certs {
	t.Helper()
	dir := t.TempDir()
	caKey, caCert, caDER := issue(t, nil, nil, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "confetti test CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	})
	ca := write(t, dir, "ca.pem", "CERTIFICATE", caDER[0])
	_, _, serverDER := issue(t, caKey, caCert, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "confetti test server"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	})
	_, _, clientDER := issue(t, caKey, caCert, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "confetti test client"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	})
	return Certs{
		CA: ca,
		Server: tlsconfig.Files{
			Cert: write(t, dir, "server.pem", "CERTIFICATE", serverDER[0]),
			Key:  write(t, dir, "server-key.pem", "EC PRIVATE KEY", serverDER[1]),
			CA:   ca,
		},
		Client: tlsconfig.Files{
			Cert: write(t, dir, "client.pem", "CERTIFICATE", clientDER[0]),
			Key:  write(t, dir, "client-key.pem", "EC PRIVATE KEY", clientDER[1]),
			CA:   ca,
		},
	}
}

// issue creates a key and a certificate from tmpl, signed by parent (self
// signed when parent is nil). It returns the key, the parsed certificate
// and the DER of the certificate and of the key.
func issue(t testing.TB, parentKey *ecdsa.PrivateKey, parent *x509.Certificate, tmpl *x509.Certificate) (*ecdsa.PrivateKey, *x509.Certificate, [2][]byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert, [2][]byte{der, keyDER}
}

func write(t testing.TB, dir, name, kind string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
