package clientconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// EnvVar names the variable that overrides the default path.
const EnvVar = "CONFETTI_CLIENT_CONFIG"

// Config is the client configuration. Every field is optional; an empty
// field leaves the CLI's built-in default in force.
type Config struct {
	// Endpoints are the shard proxies' gRPC addresses, host:port.
	Endpoints []string `yaml:"endpoints,omitempty"`
	// CacheEndpoints are the cache nodes' gRPC addresses, host:port, used by
	// subscriptions (kv watch).
	CacheEndpoints []string `yaml:"cache-endpoints,omitempty"`
	// APIKey is sent as the x-api-key gRPC metadata.
	APIKey string `yaml:"api-key,omitempty"`
	// HTTPEndpoint is the base URL of the HTTP/JSON admin API.
	HTTPEndpoint string `yaml:"http-endpoint,omitempty"`
}

const header = "# Confetti client configuration. Flags and CONFETTI_* variables override it.\n"

// DefaultPath is os.UserConfigDir()/confetti/client.yaml.
func DefaultPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("clientconfig: no user config directory (set %s or --client-config): %w", EnvVar, err)
	}
	return filepath.Join(dir, "confetti", "client.yaml"), nil
}

// Resolve returns explicit when it is not empty, else the path in
// CONFETTI_CLIENT_CONFIG, else DefaultPath.
func Resolve(explicit string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	if p := os.Getenv(EnvVar); p != "" {
		return p, nil
	}
	return DefaultPath()
}

// Load reads the file at path. A missing or empty file is an empty
// configuration; an unknown key is an error, so that a typo does not pass
// unnoticed.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Config{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("clientconfig: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("clientconfig: %s: %w", path, err)
	}
	return &c, nil
}

// Save writes c to path atomically: a temporary file in the same
// directory, written, synced and renamed over path, so a reader sees the
// old file or the new one and never a part. The file gets mode 0600; a
// missing directory is created with mode 0700.
func Save(path string, c *Config) (err error) {
	body, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Errorf("clientconfig: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("clientconfig: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("clientconfig: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("clientconfig: %w", err)
	}
	if _, err := f.WriteString(header); err != nil {
		return fmt.Errorf("clientconfig: %w", err)
	}
	if _, err := f.Write(body); err != nil {
		return fmt.Errorf("clientconfig: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("clientconfig: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("clientconfig: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("clientconfig: %w", err)
	}
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
