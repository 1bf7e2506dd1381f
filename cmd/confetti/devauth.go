package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/bootstrap"
	"github.com/confetti-io/confetti/internal/embedetcd"
	"github.com/confetti-io/confetti/internal/meta"
)

const (
	// devSecretsFile, in the data directory, keeps what `confetti dev`
	// needs across restarts and meta cannot give back: the etcd passwords
	// and the secrets of its API keys (meta stores only their hashes).
	devSecretsFile = "secrets.json"
	// devEtcdUser is the etcd user the dev proxy and caches connect as.
	devEtcdUser = "confetti"
)

type devSecrets struct {
	EtcdRootPassword string `json:"etcd-root-password"`
	EtcdPassword     string `json:"etcd-password"`
	OperatorKey      string `json:"operator-key,omitempty"`
	DemoKey          string `json:"demo-key,omitempty"`
}

// loadDevSecrets reads the secrets of dataDir, or makes new etcd passwords
// (fresh) and saves them before any cluster uses them.
func loadDevSecrets(dataDir string) (s *devSecrets, fresh bool, err error) {
	path := filepath.Join(dataDir, devSecretsFile)
	b, err := os.ReadFile(path)
	if err == nil {
		s = &devSecrets{}
		if err := json.Unmarshal(b, s); err != nil || s.EtcdRootPassword == "" || s.EtcdPassword == "" {
			return nil, false, fmt.Errorf("%s is damaged (%v): remove %s to start afresh", path, err, dataDir)
		}
		return s, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	s = &devSecrets{}
	if s.EtcdRootPassword, err = randomPassword(); err != nil {
		return nil, false, err
	}
	if s.EtcdPassword, err = randomPassword(); err != nil {
		return nil, false, err
	}
	return s, true, s.save(dataDir)
}

// save writes the secrets with mode 0600, replacing the file atomically.
func (s *devSecrets) save(dataDir string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dataDir, devSecretsFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func randomPassword() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// bootstrapDev sets up dev's clusters as `confetti init` does (etcd auth,
// Confetti's etcd user, the shards, the operator key) and keeps the
// operator key in the secrets file.
func bootstrapDev(ctx context.Context, lg *zap.Logger, clusters []*embedetcd.Cluster, s *devSecrets, fresh bool, dataDir string) error {
	cfg := bootstrap.Config{
		MetaEndpoints: clusters[0].Endpoints(),
		RootPassword:  s.EtcdRootPassword,
		User:          devEtcdUser,
		Password:      s.EtcdPassword,
		OperatorKey:   s.OperatorKey,
		OperatorName:  "dev-operator",
		Logger:        lg.Named("init"),
	}
	for k, name := range devClusters[1:] {
		cfg.Shards = append(cfg.Shards, bootstrap.Shard{ID: name, Endpoints: clusters[k+1].Endpoints()})
	}
	res, err := bootstrap.Init(ctx, cfg)
	switch {
	case errors.Is(err, bootstrap.ErrRootCredentials) && fresh:
		return fmt.Errorf("%w: %s is gone but the clusters in %s have etcd auth on: remove %s to start afresh", err, filepath.Join(dataDir, devSecretsFile), dataDir, dataDir)
	case errors.Is(err, meta.ErrShardExists):
		return fmt.Errorf("%w; %s was created with another --base-port: use that one, or remove the directory", err, dataDir)
	case err != nil:
		return err
	}
	s.OperatorKey = res.OperatorKey
	return s.save(dataDir)
}

// etcdConfig is the etcd client configuration of dev's components.
func (s *devSecrets) etcdConfig(endpoints []string) clientv3.Config {
	cfg := meta.DefaultClientConfig(endpoints)
	cfg.Username, cfg.Password = devEtcdUser, s.EtcdPassword
	return cfg
}

// ensureDevKey returns key when meta still holds it with this tenant and
// role, else creates a new key and returns it.
func ensureDevKey(ctx context.Context, store *meta.Store, key, tenant string, role meta.Role, name string) (string, error) {
	if k, err := auth.ParseKey(key); err == nil {
		if rec, ok := store.APIKey(k.ID); ok && rec.SHA256 == k.Hash() && rec.Tenant == tenant && rec.Role == role {
			return key, nil
		}
	}
	k, err := auth.NewKey()
	if err != nil {
		return "", err
	}
	if _, err := store.CreateAPIKey(ctx, meta.APIKey{ID: k.ID, Tenant: tenant, Role: role, Name: name, SHA256: k.Hash()}); err != nil {
		return "", err
	}
	return k.String(), nil
}

// devServerOptions check API keys on one of dev's gRPC servers.
func devServerOptions(store *meta.Store, lg *zap.Logger, reg prometheus.Registerer) ([]grpc.ServerOption, *auth.Authenticator, error) {
	a, err := auth.New(store, auth.Config{Logger: lg, Registerer: reg})
	if err != nil {
		return nil, nil, err
	}
	return a.ServerOptions(), a, nil
}
