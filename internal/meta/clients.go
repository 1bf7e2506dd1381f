package meta

import (
	"fmt"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Clients holds one long-lived etcd client per shard of the registry,
// created on first use and pointed at new endpoints when the registry
// changes. Its methods are safe for concurrent use.
type Clients struct {
	store *Store
	// ClientConfig builds the etcd client configuration for a shard's
	// endpoints (credentials, TLS, timeouts).
	config func(endpoints []string) clientv3.Config

	mu      sync.Mutex
	clients map[string]*shardClient
	closed  bool
}

type shardClient struct {
	cli       *clientv3.Client
	endpoints []string
}

// DefaultClientConfig is the etcd client configuration used when NewClients
// is given none.
func DefaultClientConfig(endpoints []string) clientv3.Config {
	return clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Logger:               zap.NewNop(),
	}
}

// NewClients returns a client set following store's registry. config may be
// nil for DefaultClientConfig.
func NewClients(store *Store, config func(endpoints []string) clientv3.Config) *Clients {
	if config == nil {
		config = DefaultClientConfig
	}
	return &Clients{store: store, config: config, clients: map[string]*shardClient{}}
}

// Get returns the client of a shard.
func (c *Clients) Get(shardID string) (*clientv3.Client, error) {
	sh, ok := c.store.Shard(shardID)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrShardNotFound, shardID)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("%w: shutting down", ErrUnavailable)
	}
	if sc, ok := c.clients[shardID]; ok {
		if !slices.Equal(sc.endpoints, sh.Endpoints) {
			sc.cli.SetEndpoints(sh.Endpoints...)
			sc.endpoints = slices.Clone(sh.Endpoints)
		}
		return sc.cli, nil
	}
	cli, err := clientv3.New(c.config(sh.Endpoints))
	if err != nil {
		return nil, fmt.Errorf("%w: shard %s: %w", ErrUnavailable, shardID, err)
	}
	c.clients[shardID] = &shardClient{cli: cli, endpoints: slices.Clone(sh.Endpoints)}
	return cli, nil
}

// Close closes every client.
func (c *Clients) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for id, sc := range c.clients {
		sc.cli.Close()
		delete(c.clients, id)
	}
}
