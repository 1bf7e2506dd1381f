package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/meta"
)

// Config configures a cache node. Zero values mean the documented
// defaults.
type Config struct {
	// Logger receives the node's logs; nil means none.
	Logger *zap.Logger
	// NodeName names the node in status and logs; empty means the host
	// name.
	NodeName string
	// EtcdAddr is the address of the node's etcd front door, registered
	// with the node in meta; empty when it serves none.
	EtcdAddr string `json:"-" yaml:"-"`
	// Registerer receives the node's metrics; nil means none.
	Registerer prometheus.Registerer
	// HistoryMaxEvents bounds each shard's history ring by events; zero
	// means 100000.
	HistoryMaxEvents int
	// HistoryMaxBytes bounds each shard's history ring by bytes; zero
	// means 64 MiB.
	HistoryMaxBytes int64
	// ProgressInterval is how long, at most, a subscriber goes without a
	// message: an idle one gets a Progress bookmark every interval, which
	// clients also take as the sign the node is alive (a stream's
	// response header says the interval, see wire.BookmarkIntervalHeader).
	// It is also how often the node asks etcd for watch progress. Zero
	// means 2 seconds; the contract is at most 10.
	ProgressInterval time.Duration
	// StallTimeout restarts a shard watch that answered nothing, not even
	// progress, for this long; zero means 4 progress intervals.
	StallTimeout time.Duration
	// ResetChunkBytes bounds the bytes of one Reset chunk; zero means
	// 1 MiB, well under gRPC's default 4 MiB message limit.
	ResetChunkBytes int
	// EventsBatchBytes bounds an Events message (a larger single
	// transaction is still sent whole); zero means 1 MiB.
	EventsBatchBytes int
	// SubscriberQueue bounds the encoded messages waiting for one
	// subscriber; when it is full the subscriber is marked lagging and
	// catches up from history (or by a Reset) without delaying others.
	// Zero means 128.
	SubscriberQueue int
	// SSEWriteTimeout bounds how long a Server-Sent Events client may
	// leave a write unread before its connection is closed (it resumes
	// by reconnecting with its last event id); zero means 30 s.
	SSEWriteTimeout time.Duration
	// ResetCacheEntries bounds how many encoded Resets (one per tenant,
	// prefixes, view and revision) the node keeps for reconnect storms;
	// zero means 64.
	ResetCacheEntries int
	// ResetCacheMaxBytes is the largest encoded Reset the cache keeps;
	// zero means 16 MiB.
	ResetCacheMaxBytes int
	// MaxSubscriptionsPerTenant bounds one tenant's open subscriptions on
	// this node; zero means 100000.
	MaxSubscriptionsPerTenant int
	// MaxSubscriptionsPerConn bounds the subscriptions multiplexed over one
	// client connection; zero means 20000.
	MaxSubscriptionsPerConn int
	// SyncWait bounds how long a request waits for a shard to be loaded or
	// to reach a revision; zero means 10 seconds.
	SyncWait time.Duration
}

func (c *Config) setDefaults() error {
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.NodeName == "" {
		c.NodeName, _ = os.Hostname()
	}
	if c.HistoryMaxEvents == 0 {
		c.HistoryMaxEvents = 100000
	}
	if c.HistoryMaxBytes == 0 {
		c.HistoryMaxBytes = 64 << 20
	}
	if c.ProgressInterval == 0 {
		c.ProgressInterval = 2 * time.Second
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = 4 * c.ProgressInterval
	}
	if c.ResetChunkBytes == 0 {
		c.ResetChunkBytes = 1 << 20
	}
	if c.EventsBatchBytes == 0 {
		c.EventsBatchBytes = 1 << 20
	}
	if c.SSEWriteTimeout == 0 {
		c.SSEWriteTimeout = 30 * time.Second
	}
	if c.SubscriberQueue == 0 {
		c.SubscriberQueue = 128
	}
	if c.ResetCacheEntries == 0 {
		c.ResetCacheEntries = 64
	}
	if c.ResetCacheMaxBytes == 0 {
		c.ResetCacheMaxBytes = 16 << 20
	}
	if c.MaxSubscriptionsPerTenant == 0 {
		c.MaxSubscriptionsPerTenant = 100000
	}
	if c.MaxSubscriptionsPerConn == 0 {
		c.MaxSubscriptionsPerConn = 20000
	}
	if c.SyncWait == 0 {
		c.SyncWait = 10 * time.Second
	}
	switch {
	case c.HistoryMaxEvents < 0 || c.HistoryMaxBytes < 0:
		return fmt.Errorf("%w: history bounds must not be negative", ErrBadRequest)
	case c.ProgressInterval < 0 || c.ProgressInterval > 10*time.Second:
		return fmt.Errorf("%w: progress interval %s must be in (0, 10s]", ErrBadRequest, c.ProgressInterval)
	case c.ResetChunkBytes < 0 || c.EventsBatchBytes < 0 || c.SyncWait < 0 || c.StallTimeout < 0 || c.SSEWriteTimeout < 0 || c.SubscriberQueue < 0 || c.ResetCacheEntries < 0 || c.ResetCacheMaxBytes < 0 ||
		c.MaxSubscriptionsPerTenant < 0 || c.MaxSubscriptionsPerConn < 0:
		return fmt.Errorf("%w: sizes and durations must not be negative", ErrBadRequest)
	}
	return nil
}

// Cache is a cache node. Its methods are safe for concurrent use.
type Cache struct {
	confettipb.UnimplementedCacheServer

	cfg     Config
	lg      *zap.Logger
	store   *meta.Store
	clients *meta.Clients
	metrics *metrics

	resetCache  *lru.Cache[string, []*outMsg]
	resetFlight singleflight.Group
	// ssePool writes to the SSE connections taken over from HTTP/1.1.
	ssePool *ssePool

	mu     sync.RWMutex
	shards map[string]*shardState
	// sources are how each shard of shards is being sourced.
	sources map[string]*shardSource
	// Open subscriptions per tenant, and their count per client
	// connection.
	subs    map[string]map[*subscription]struct{}
	perConn map[string]int
	tokens  *tokenCodec
	ready   chan struct{} // closed once the token key is loaded
	// wasReady is set once Readiness has found every shard synced or
	// given up on; from then on shards never make the node unready.
	wasReady atomic.Bool
	closed   bool
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	subsWG   sync.WaitGroup
}

// New starts a cache node that follows store's registry, sourcing every
// shard through clients, until Close.
func New(store *meta.Store, clients *meta.Clients, cfg Config) (*Cache, error) {
	if store == nil || clients == nil {
		return nil, fmt.Errorf("%w: cache needs a meta store and shard clients", ErrBadRequest)
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	resets, err := lru.New[string, []*outMsg](cfg.ResetCacheEntries)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cache{
		resetCache: resets,
		cfg:        cfg,
		lg:         cfg.Logger,
		store:      store,
		clients:    clients,
		metrics:    newMetrics(cfg.Registerer),
		shards:     map[string]*shardState{},
		sources:    map[string]*shardSource{},
		subs:       map[string]map[*subscription]struct{}{},
		perConn:    map[string]int{},
		ready:      make(chan struct{}),
		ctx:        ctx,
		cancel:     cancel,
	}
	c.ssePool = newSSEPool(c, runtime.GOMAXPROCS(0))
	c.wg.Add(1)
	go c.run()
	return c, nil
}

// Register registers the Cache service on s.
func (c *Cache) Register(s *grpc.Server) { confettipb.RegisterCacheServer(s, c) }

// Ready reports whether the node can serve: Readiness is nil.
func (c *Cache) Ready() bool { return c.Readiness() == nil }

// Readiness returns nil when the node can serve: meta loaded, token key
// known, and, when the node starts, every registered shard either synced
// or given up on (see Unavailable). While a shard's first sync is under
// way (within SyncWait of its start, its client not failing) a starting
// node is not ready, and the error names the shard. One unreachable shard
// never keeps the node unready, and a shard added later never makes a
// ready node unready: only its own tenants wait or are unavailable.
func (c *Cache) Readiness() error {
	if err := c.store.Loaded(); err != nil {
		return err
	}
	select {
	case <-c.ready:
	default:
		return fmt.Errorf("%w: the token key is not loaded from meta yet", ErrNotSynced)
	}
	if c.wasReady.Load() {
		return nil
	}
	var pending []error
	for _, sh := range c.store.Shards() {
		if p, err := c.shardAvailability(sh.ID); p {
			pending = append(pending, err)
		}
	}
	if len(pending) == 0 {
		c.wasReady.Store(true)
	}
	return errors.Join(pending...)
}

// Unavailable lists, one line each, the registered shards a ready node
// does not serve now: shards it could not sync within SyncWait or whose
// client fails (their tenants' subscriptions and reads get Unavailable
// naming the shard), and shards added since it became ready whose first
// sync is under way (their tenants' requests wait for it). The other
// tenants are served.
func (c *Cache) Unavailable() []string {
	var out []string
	for _, sh := range c.store.Shards() {
		if p, err := c.shardAvailability(sh.ID); err != nil && (!p || c.wasReady.Load()) {
			out = append(out, err.Error())
		}
	}
	return out
}

// shardSource is the sourcing of one shard on this node.
type shardSource struct {
	started time.Time
	cancel  context.CancelFunc

	mu sync.Mutex
	// cli is the shard's client once the node has one; dialErr is why the
	// last attempt to get one failed.
	cli     *clientv3.Client
	dialErr error
	// gaveUp is set once the node stops waiting for the shard's first
	// sync (its client failed, or SyncWait passed), so that readiness does
	// not flap with the client's reconnection attempts; failure is the
	// last reason seen.
	gaveUp  bool
	failure string
}

func (s *shardSource) client() (*clientv3.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cli, s.dialErr
}

// sourceClient is the client the node sources a shard through, nil while
// it has none.
func (c *Cache) sourceClient(id string) *clientv3.Client {
	c.mu.RLock()
	src := c.sources[id]
	c.mu.RUnlock()
	if src == nil {
		return nil
	}
	cli, _ := src.client()
	return cli
}

// syncPoll is how often a request waiting for an unsynced shard checks
// whether the node has given up on it.
const syncPoll = 100 * time.Millisecond

// shardAvailability says how the node stands with a shard: err nil when
// it has synced it (it serves the shard's tenants from then on, from
// memory if the shard goes down); pending with an ErrNotSynced error
// while its first sync may still succeed; otherwise an ErrShardUnavailable
// error saying why the shard's tenants are unavailable on this node.
func (c *Cache) shardAvailability(id string) (pending bool, err error) {
	c.mu.RLock()
	st, src := c.shards[id], c.sources[id]
	c.mu.RUnlock()
	if st == nil || src == nil {
		return true, fmt.Errorf("%w: shard %s is not sourced on this node yet", ErrNotSynced, id)
	}
	_, _, synced := st.wait()
	if synced {
		return false, nil
	}
	why, failing := "no answer from its etcd yet", false
	cli, dialErr := src.client()
	st.mu.RLock()
	lastErr := st.lastErr
	st.mu.RUnlock()
	switch {
	case dialErr != nil:
		why, failing = dialErr.Error(), true
	case cli != nil && cli.ActiveConnection().GetState() == connectivity.TransientFailure:
		why, failing = fmt.Sprintf("cannot connect to %s", strings.Join(cli.Endpoints(), ",")), true
		if lastErr != "" {
			why += " (last error: " + lastErr + ")"
		}
	case lastErr != "":
		why = lastErr
	}
	age := time.Since(src.started)
	src.mu.Lock()
	if failing {
		src.failure = why
	} else if lastErr == "" && src.failure != "" {
		why = src.failure
	}
	src.gaveUp = src.gaveUp || failing || age >= c.cfg.SyncWait
	gaveUp := src.gaveUp
	src.mu.Unlock()
	if !gaveUp {
		return true, fmt.Errorf("%w: shard %s: first sync under way: %s", ErrNotSynced, id, why)
	}
	if !failing {
		why += fmt.Sprintf(" (not synced within %s)", c.cfg.SyncWait)
	}
	return false, fmt.Errorf("%w: shard %s is not synced on this node: %s; its tenants are unavailable on this node until it answers", ErrShardUnavailable, id, why)
}

// Close stops the shard watches and ends every subscription.
func (c *Cache) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	c.subsWG.Wait()
	c.ssePool.close()
}

func (c *Cache) shard(id string) *shardState {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.shards[id]
}

func (c *Cache) codec() *tokenCodec {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.tokens
}

// run loads the token key, then starts a source for every shard the
// registry lists, now and as shards are added.
func (c *Cache) run() {
	defer c.wg.Done()
	backoff := 100 * time.Millisecond
	for {
		key, err := c.store.TokenKey(c.ctx)
		if err == nil {
			c.mu.Lock()
			c.tokens = newTokenCodec(key)
			c.mu.Unlock()
			close(c.ready)
			break
		}
		c.lg.Warn("loading token key", zap.Error(err))
		select {
		case <-time.After(backoff):
		case <-c.ctx.Done():
			return
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	for {
		changed := c.store.Changed()
		registered := map[string]bool{}
		for _, sh := range c.store.Shards() {
			registered[sh.ID] = true
			if c.shard(sh.ID) == nil {
				c.source(sh)
			}
		}
		c.mu.Lock()
		for id, src := range c.sources {
			if !registered[id] {
				// Removed from the registry (it held no tenant).
				src.cancel()
				delete(c.sources, id)
				delete(c.shards, id)
				c.lg.Info("stopped sourcing a removed shard", zap.String("shard", id))
			}
		}
		c.mu.Unlock()
		c.clients.Prune()
		select {
		case <-changed:
		case <-c.ctx.Done():
			return
		}
	}
}

// source starts sourcing a shard: it gets the shard's client, retrying
// with backoff while that fails (with etcd credentials, getting a client
// of an unreachable shard fails), then runs the shard's source until the
// node closes or the shard is removed.
func (c *Cache) source(sh meta.Shard) {
	st := newShardState(sh.ID, c.cfg.HistoryMaxEvents, c.cfg.HistoryMaxBytes, c.metrics)
	ctx, cancel := context.WithCancel(c.ctx)
	src := &shardSource{started: time.Now(), cancel: cancel}
	c.mu.Lock()
	c.shards[sh.ID] = st
	c.sources[sh.ID] = src
	c.mu.Unlock()
	c.lg.Info("sourcing shard", zap.String("shard", sh.ID), zap.Strings("endpoints", sh.Endpoints))
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		backoff := 100 * time.Millisecond
		for {
			cli, err := c.clients.Get(sh.ID)
			src.mu.Lock()
			src.cli, src.dialErr = cli, err
			src.mu.Unlock()
			if err == nil {
				break
			}
			// Warn once; the retries go on quietly until the shard answers.
			lvl := zap.DebugLevel
			if backoff == 100*time.Millisecond {
				lvl = zap.WarnLevel
			}
			c.lg.Log(lvl, "no client of the shard, its tenants are unavailable on this node", zap.String("shard", sh.ID), zap.Error(err), zap.Duration("backoff", backoff))
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, 5*time.Second)
		}
		src.mu.Lock()
		cli := src.cli
		src.mu.Unlock()
		es := &etcdSource{
			cli:       cli,
			shard:     sh.ID,
			lg:        c.lg,
			backfill:  int64(c.cfg.HistoryMaxEvents),
			progress:  c.cfg.ProgressInterval,
			stall:     c.cfg.StallTimeout,
			listLimit: 5000,
		}
		es.Run(ctx, st)
	}()
}

// Advertise registers the node in meta, under the gRPC address proxies
// reach it at, until it closes (retrying while meta cannot be reached), so
// that release status counts the gateways subscribed to it.
func (c *Cache) Advertise(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.register(addr)
	}()
}

func (c *Cache) register(addr string) {
	select {
	case <-c.ready:
	case <-c.ctx.Done():
		return
	}
	backoff := 100 * time.Millisecond
	for {
		err := c.store.RegisterCache(c.ctx, meta.CacheNode{Name: c.cfg.NodeName, Addr: addr, EtcdAddr: c.cfg.EtcdAddr})
		if err == nil {
			return
		}
		c.lg.Warn("registering the node in meta", zap.Error(err))
		select {
		case <-time.After(backoff):
		case <-c.ctx.Done():
			return
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// waitSynced waits until a shard is listed and has applied at least rev.
// A shard the node has given up syncing (see shardAvailability) fails at
// once with ErrShardUnavailable naming the shard and why.
func (c *Cache) waitSynced(ctx context.Context, shard string, rev int64) (*shardState, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.SyncWait)
	defer cancel()
	for {
		metaChanged := c.store.Changed()
		if st := c.shard(shard); st != nil {
			for {
				ch, cur, synced := st.wait()
				if synced && cur >= rev {
					return st, nil
				}
				var poll <-chan time.Time
				if !synced {
					pending, err := c.shardAvailability(shard)
					if !pending {
						return nil, err
					}
					poll = time.After(syncPoll)
				}
				select {
				case <-ch:
				case <-poll:
				case <-ctx.Done():
					if !synced {
						_, err := c.shardAvailability(shard)
						return nil, fmt.Errorf("%w; retry shortly", err)
					}
					return nil, fmt.Errorf("%w: shard %s is at revision %d, the request needs %d; retry shortly", ErrNotSynced, shard, cur, rev)
				}
			}
		}
		select {
		case <-metaChanged:
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: shard %s is not loaded on this node yet; retry shortly", ErrNotSynced, shard)
		}
	}
}

// admit counts a new subscription of tenant over conn against the limits;
// the returned func releases it.
func (c *Cache) admit(sub *subscription, conn string) (func(), error) {
	tenant := sub.tenant.Name
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.subs[tenant]); n >= c.cfg.MaxSubscriptionsPerTenant {
		return nil, fmt.Errorf("%w: tenant %q has %d subscriptions on this node, the limit; spread its gateways over more cache nodes or raise --max-subscriptions-per-tenant", ErrTooManySubscriptions, tenant, n)
	}
	if n := c.perConn[conn]; n >= c.cfg.MaxSubscriptionsPerConn {
		return nil, fmt.Errorf("%w: connection %s carries %d subscriptions, the limit; open more connections or raise --max-subscriptions-per-conn", ErrTooManySubscriptions, conn, n)
	}
	if c.subs[tenant] == nil {
		c.subs[tenant] = map[*subscription]struct{}{}
	}
	c.subs[tenant][sub] = struct{}{}
	c.perConn[conn]++
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if delete(c.subs[tenant], sub); len(c.subs[tenant]) == 0 {
			delete(c.subs, tenant)
		}
		if c.perConn[conn]--; c.perConn[conn] == 0 {
			delete(c.perConn, conn)
		}
	}, nil
}
