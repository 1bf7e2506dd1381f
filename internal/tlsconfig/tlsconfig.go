package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Files names the PEM files of one side of a TLS connection. Every field
// is optional; see Server and Client for what each combination means.
type Files struct {
	// Cert is this side's certificate chain.
	Cert string `yaml:"cert"`
	// Key is the private key of Cert.
	Key string `yaml:"key"`
	// CA is the bundle that verifies the other side.
	CA string `yaml:"cacert"`
}

// Empty reports whether no file is named, which means no TLS.
func (f Files) Empty() bool { return f.Cert == "" && f.Key == "" && f.CA == "" }

// Server returns the configuration of a TLS listener: nil when f is empty
// (plaintext). Cert and Key are required otherwise; with CA, clients must
// present a certificate that CA signed.
func Server(f Files) (*tls.Config, error) {
	if f.Empty() {
		return nil, nil
	}
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("tlsconfig: a TLS listener needs both a certificate and its key")
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("tlsconfig: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.CA != "" {
		pool, err := loadPool(f.CA)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// Client returns the configuration of a TLS client: nil when f is empty
// (plaintext). CA verifies the server (the system roots when empty); Cert
// and Key, given together, are presented to servers that ask for a client
// certificate.
func Client(f Files) (*tls.Config, error) {
	if f.Empty() {
		return nil, nil
	}
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("tlsconfig: a client certificate needs both the certificate and its key")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.Cert != "" {
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("tlsconfig: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if f.CA != "" {
		pool, err := loadPool(f.CA)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

func loadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tlsconfig: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("tlsconfig: %s holds no PEM certificate", path)
	}
	return pool, nil
}
