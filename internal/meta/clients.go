package meta

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/confetti-io/confetti/internal/etcdauth"
)

// redialAfter is how long Clients answers a shard's failed dial with its
// error before dialling again.
const redialAfter = time.Second

// Clients holds one long-lived etcd client per shard of the registry,
// created on first use and pointed at new endpoints when the registry
// changes. A shard that cannot be dialled never holds up the others: each
// shard is dialled on its own, and a failed dial is answered with its
// error for a second before the next attempt. Its methods are safe for
// concurrent use.
type Clients struct {
	store *Store
	// ClientConfig builds the etcd client configuration for a shard's
	// endpoints (credentials, TLS, timeouts).
	config func(endpoints []string) clientv3.Config

	mu      sync.Mutex
	clients map[string]*shardClient
	// dials are the shards being dialled, or whose last dial failed.
	dials  map[string]*dial
	closed bool
}

type shardClient struct {
	cli       *clientv3.Client
	endpoints []string
}

// dial is one attempt to create a shard's client: done closes when it
// ends; a failed one keeps err until retry.
type dial struct {
	done  chan struct{}
	err   error
	retry time.Time
}

// redialBackoff paces the reconnects of an etcd client's connection to a
// member that went away. gRPC's default doubles the wait up to two minutes,
// so a member back after a few seconds' outage would wait seconds more for
// the next attempt; capped at half a second, a restarted shard is in use
// again within about that of serving.
var redialBackoff = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
	MinConnectTimeout: 5 * time.Second,
}

// DefaultClientConfig is the etcd client configuration used when NewClients
// is given none.
func DefaultClientConfig(endpoints []string) clientv3.Config {
	return clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		DialOptions:          []grpc.DialOption{grpc.WithConnectParams(redialBackoff)},
		Logger:               zap.NewNop(),
	}
}

// NewClients returns a client set following store's registry. config may be
// nil for DefaultClientConfig.
func NewClients(store *Store, config func(endpoints []string) clientv3.Config) *Clients {
	if config == nil {
		config = DefaultClientConfig
	}
	return &Clients{store: store, config: config, clients: map[string]*shardClient{}, dials: map[string]*dial{}}
}

// Get returns the client of a shard. With etcd credentials, creating a
// client authenticates, which waits up to the dial timeout for an
// unreachable shard; callers for that shard wait for the one attempt,
// callers for other shards do not.
func (c *Clients) Get(shardID string) (*clientv3.Client, error) {
	sh, ok := c.store.Shard(shardID)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrShardNotFound, shardID)
	}
	c.mu.Lock()
	for {
		if c.closed {
			c.mu.Unlock()
			return nil, fmt.Errorf("%w: shutting down", ErrUnavailable)
		}
		if sc, ok := c.clients[shardID]; ok {
			if !slices.Equal(sc.endpoints, sh.Endpoints) {
				sc.cli.SetEndpoints(c.config(sh.Endpoints).Endpoints...)
				sc.endpoints = slices.Clone(sh.Endpoints)
			}
			c.mu.Unlock()
			return sc.cli, nil
		}
		d, ok := c.dials[shardID]
		if !ok {
			break
		}
		select {
		case <-d.done:
			if time.Now().Before(d.retry) {
				c.mu.Unlock()
				return nil, d.err
			}
			delete(c.dials, shardID)
		default:
			c.mu.Unlock()
			<-d.done
			c.mu.Lock()
		}
	}
	d := &dial{done: make(chan struct{})}
	c.dials[shardID] = d
	c.mu.Unlock()

	cli, err := etcdauth.New(c.config(sh.Endpoints))

	c.mu.Lock()
	defer c.mu.Unlock()
	defer close(d.done)
	if err != nil {
		d.err = fmt.Errorf("%w: no client of shard %s at %s: %w", ErrShardUnreachable, shardID, strings.Join(sh.Endpoints, ","), err)
		d.retry = time.Now().Add(redialAfter)
		return nil, d.err
	}
	delete(c.dials, shardID)
	if c.closed {
		cli.Close()
		return nil, fmt.Errorf("%w: shutting down", ErrUnavailable)
	}
	c.clients[shardID] = &shardClient{cli: cli, endpoints: slices.Clone(sh.Endpoints)}
	return cli, nil
}

// Dial returns a new client of endpoints with the set's configuration
// (credentials, TLS), for an etcd cluster that is not a shard yet, such as
// one being checked before it is registered. The caller closes it.
func (c *Clients) Dial(endpoints []string) (*clientv3.Client, error) {
	return etcdauth.New(c.config(endpoints))
}

// Prune closes the clients of shards no longer in the registry.
func (c *Clients) Prune() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, sc := range c.clients {
		if _, ok := c.store.Shard(id); !ok {
			sc.cli.Close()
			delete(c.clients, id)
		}
	}
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
