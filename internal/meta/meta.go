package meta

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc/codes"

	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/rpcerr"
)

const (
	// Prefix holds everything the meta store keeps.
	Prefix        = "/confetti/meta/"
	shardsPrefix  = Prefix + "shards/"
	tenantsPrefix = Prefix + "tenants/"
	tokenKeyKey   = Prefix + "token-key"
)

var (
	// ErrTenantNotFound is returned for a tenant with no placement.
	ErrTenantNotFound = rpcerr.New(codes.NotFound, "meta: tenant not found")
	// ErrTenantExists is returned when creating a tenant that exists.
	ErrTenantExists = rpcerr.New(codes.AlreadyExists, "meta: tenant already exists")
	// ErrShardNotFound is returned for a shard not in the registry.
	ErrShardNotFound = rpcerr.New(codes.NotFound, "meta: shard not found")
	// ErrShardExists is returned when adding a shard id with other
	// endpoints than the registered one.
	ErrShardExists = rpcerr.New(codes.AlreadyExists, "meta: shard already exists")
	// ErrNoShard is returned when no active shard can take a tenant.
	ErrNoShard = rpcerr.New(codes.FailedPrecondition, "meta: no active shard")
	// ErrNoHealthyShard is returned when active shards exist but the
	// caller's check (the proxy's health view) refused every one of them.
	ErrNoHealthyShard = rpcerr.New(codes.Unavailable, "meta: no healthy shard")
	// ErrShardNotEmpty is returned when removing a shard that still holds
	// tenants.
	ErrShardNotEmpty = rpcerr.New(codes.FailedPrecondition, "meta: shard holds tenants")
	// ErrShardUnreachable is returned when a client of a shard cannot be
	// created: with etcd credentials, creating one authenticates, which
	// needs the shard to answer.
	ErrShardUnreachable = rpcerr.New(codes.Unavailable, "meta: shard unreachable")
	// ErrUnavailable is returned when the meta cluster cannot be reached.
	ErrUnavailable = rpcerr.New(codes.Unavailable, "meta: meta cluster unavailable")
	// ErrInvalid is returned for a malformed shard record.
	ErrInvalid = rpcerr.New(codes.InvalidArgument, "meta: invalid request")
)

// ShardState says whether a shard takes new tenants.
type ShardState string

const (
	// ShardActive shards take new tenants (while their proxy finds them
	// healthy).
	ShardActive ShardState = "active"
	// ShardDraining shards keep their tenants but take no new ones.
	ShardDraining ShardState = "draining"
	// ShardPending shards were registered although their endpoints failed
	// the check (shard add --force); they take no tenant until a proxy's
	// check passes, which makes them active, or an operator activates
	// them.
	ShardPending ShardState = "pending"
)

func (s ShardState) valid() bool {
	switch s {
	case ShardActive, ShardDraining, ShardPending:
		return true
	}
	return false
}

// Shard is a registered etcd cluster.
type Shard struct {
	ID        string     `json:"id"`
	Endpoints []string   `json:"endpoints"`
	State     ShardState `json:"state"`
	// Weight scales the shard's share of new tenants; zero means 1.
	Weight float64 `json:"weight,omitempty"`
}

func (s Shard) weight() float64 {
	if s.Weight <= 0 {
		return 1
	}
	return s.Weight
}

// TenantState is the lifecycle state of a tenant.
type TenantState string

const (
	TenantActive TenantState = "active"
)

// Tenant is a tenant's placement record.
type Tenant struct {
	Name  string      `json:"name"`
	Shard string      `json:"shard"`
	Epoch int64       `json:"epoch"`
	State TenantState `json:"state"`
	// CreateTime is a Unix time in seconds.
	CreateTime int64 `json:"create_time"`
}

// Config configures a Store.
type Config struct {
	// Logger receives the store's logs; nil means none.
	Logger *zap.Logger
	// LoadFactor is e in the bounded-load cap: no shard takes a new tenant
	// while it holds more than (1+e) times its weighted share. Zero means
	// 0.25.
	LoadFactor float64
	// RequestTimeout bounds each meta request. Zero means 5 seconds.
	RequestTimeout time.Duration
}

// Store mirrors the meta etcd cluster in memory. Its methods are safe for
// concurrent use.
type Store struct {
	cli *clientv3.Client
	cfg Config
	lg  *zap.Logger

	mu      sync.RWMutex
	shards  map[string]Shard
	tenants map[string]Tenant
	apiKeys map[string]APIKey
	caches  map[string]CacheNode
	rev     int64
	changed chan struct{}

	ready     chan struct{}
	readyOnce sync.Once
	lookups   singleflight.Group
	// loadErr is why the last listing of meta failed, nil once one
	// succeeded; guarded by mu.
	loadErr error

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New starts a Store that follows the meta cluster through cli until Close.
// The caller keeps ownership of cli.
func New(cli *clientv3.Client, cfg Config) (*Store, error) {
	if cli == nil {
		return nil, fmt.Errorf("%w: nil meta client", ErrInvalid)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.LoadFactor == 0 {
		cfg.LoadFactor = 0.25
	}
	if cfg.LoadFactor < 0 {
		return nil, fmt.Errorf("%w: load factor %v must not be negative", ErrInvalid, cfg.LoadFactor)
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		cli:     cli,
		cfg:     cfg,
		lg:      cfg.Logger,
		shards:  map[string]Shard{},
		tenants: map[string]Tenant{},
		apiKeys: map[string]APIKey{},
		caches:  map[string]CacheNode{},
		changed: make(chan struct{}),
		ready:   make(chan struct{}),
		ctx:     ctx,
		cancel:  cancel,
	}
	s.wg.Add(1)
	go s.run()
	return s, nil
}

// Close stops following meta.
func (s *Store) Close() {
	s.cancel()
	s.wg.Wait()
}

// WaitReady waits until the store has loaded meta once. Its error names
// the meta endpoints and the last error of the listing.
func (s *Store) WaitReady(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: meta not loaded from %s: %w%s", ErrUnavailable, strings.Join(s.cli.Endpoints(), ","), ctx.Err(), s.lastLoadError())
	}
}

// Loaded returns nil once the store has loaded meta, else an Unavailable
// error saying that meta is not loaded yet, from which endpoints, and why
// the last attempt failed. Callers that answer from the store's memory
// (API keys, placement) return it instead of "not found" while it is not
// nil.
func (s *Store) Loaded() error {
	if s.Ready() {
		return nil
	}
	return fmt.Errorf("%w: meta not loaded yet from %s%s; retry shortly", ErrUnavailable, strings.Join(s.cli.Endpoints(), ","), s.lastLoadError())
}

// lastLoadError is ", last error: ..." for a failed listing, else "".
func (s *Store) lastLoadError() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.loadErr == nil {
		return ""
	}
	return fmt.Sprintf(" (last error: %v)", s.loadErr)
}

// Ready reports whether the store has loaded meta once.
func (s *Store) Ready() bool {
	select {
	case <-s.ready:
		return true
	default:
		return false
	}
}

// Changed returns a channel closed at the next change the store applies.
func (s *Store) Changed() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}

// Revision is the meta revision the store reflects.
func (s *Store) Revision() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rev
}

// Shard returns one shard of the registry.
func (s *Store) Shard(id string) (Shard, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sh, ok := s.shards[id]
	return sh, ok
}

// Shards returns the registry sorted by id.
func (s *Store) Shards() []Shard {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Shard, 0, len(s.shards))
	for _, sh := range s.shards {
		out = append(out, sh)
	}
	slices.SortFunc(out, func(a, b Shard) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Tenants returns the placement table sorted by name.
func (s *Store) Tenants() []Tenant {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Tenant, 0, len(s.tenants))
	for _, t := range s.tenants {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b Tenant) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Tenant returns a tenant's placement from memory.
func (s *Store) Tenant(name string) (Tenant, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.tenants[name]
	return t, ok
}

// LookupTenant returns a tenant's placement from memory, or, for a tenant
// created so recently that the watch has not delivered it, from meta.
// Concurrent misses for one name share one meta read.
func (s *Store) LookupTenant(ctx context.Context, name string) (Tenant, error) {
	if t, ok := s.Tenant(name); ok {
		return t, nil
	}
	if err := keys.ValidName("tenant", name); err != nil {
		return Tenant{}, err
	}
	v, err, _ := s.lookups.Do(name, func() (any, error) {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		defer cancel()
		resp, err := s.cli.Get(ctx, tenantsPrefix+name)
		if err != nil {
			return Tenant{}, fmt.Errorf("%w: look up tenant %q: %w", ErrUnavailable, name, err)
		}
		if len(resp.Kvs) == 0 {
			return Tenant{}, fmt.Errorf("%w: %q (create it with `confetti tenant create %s`)", ErrTenantNotFound, name, name)
		}
		var t Tenant
		if err := json.Unmarshal(resp.Kvs[0].Value, &t); err != nil {
			return Tenant{}, fmt.Errorf("meta: decode tenant %q: %w", name, err)
		}
		return t, nil
	})
	return v.(Tenant), err
}

// AddShard registers a shard. Adding a shard that exists with the same
// endpoints returns it unchanged, so registration can be repeated.
func (s *Store) AddShard(ctx context.Context, sh Shard) (Shard, error) {
	if err := keys.ValidName("shard", sh.ID); err != nil {
		return Shard{}, err
	}
	if len(sh.Endpoints) == 0 {
		return Shard{}, fmt.Errorf("%w: shard %q needs at least one etcd endpoint", ErrInvalid, sh.ID)
	}
	if sh.Weight < 0 {
		return Shard{}, fmt.Errorf("%w: shard %q weight %v must not be negative", ErrInvalid, sh.ID, sh.Weight)
	}
	if sh.State == "" {
		sh.State = ShardActive
	}
	if !sh.State.valid() {
		return Shard{}, fmt.Errorf("%w: shard %q state %q must be %q, %q or %q", ErrInvalid, sh.ID, sh.State, ShardActive, ShardDraining, ShardPending)
	}
	b, err := json.Marshal(sh)
	if err != nil {
		return Shard{}, err
	}
	key := shardsPrefix + sh.ID
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(b))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return Shard{}, fmt.Errorf("%w: add shard %q: %w", ErrUnavailable, sh.ID, err)
	}
	if resp.Succeeded {
		return sh, s.waitRevision(ctx, resp.Header.Revision)
	}
	var cur Shard
	if err := json.Unmarshal(resp.Responses[0].GetResponseRange().Kvs[0].Value, &cur); err != nil {
		return Shard{}, fmt.Errorf("meta: decode shard %q: %w", sh.ID, err)
	}
	if !slices.Equal(cur.Endpoints, sh.Endpoints) {
		return cur, fmt.Errorf("%w: %q is registered with endpoints %s", ErrShardExists, sh.ID, strings.Join(cur.Endpoints, ","))
	}
	return cur, nil
}

// SetShardState changes a shard's state (draining and pending shards keep
// their tenants but take no new ones) with a compare-and-swap on the
// record, so a concurrent change of the shard is never overwritten.
func (s *Store) SetShardState(ctx context.Context, id string, state ShardState) (Shard, error) {
	if state != ShardActive && state != ShardDraining {
		return Shard{}, fmt.Errorf("%w: shard state %q must be %q or %q", ErrInvalid, state, ShardActive, ShardDraining)
	}
	return s.setShardState(ctx, id, state, nil)
}

// ActivatePending makes a pending shard active, and returns a shard in
// any other state unchanged (an operator's drain is never undone by it).
func (s *Store) ActivatePending(ctx context.Context, id string) (Shard, error) {
	return s.setShardState(ctx, id, ShardActive, func(cur ShardState) bool { return cur == ShardPending })
}

// setShardState sets a shard's state if from is nil or accepts its
// current state.
func (s *Store) setShardState(ctx context.Context, id string, state ShardState, from func(ShardState) bool) (Shard, error) {
	key := shardsPrefix + id
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	for {
		resp, err := s.cli.Get(ctx, key)
		if err != nil {
			return Shard{}, fmt.Errorf("%w: read shard %q: %w", ErrUnavailable, id, err)
		}
		if len(resp.Kvs) == 0 {
			return Shard{}, fmt.Errorf("%w: %q (list shards with `confetti shard list`)", ErrShardNotFound, id)
		}
		var sh Shard
		if err := json.Unmarshal(resp.Kvs[0].Value, &sh); err != nil {
			return Shard{}, fmt.Errorf("meta: decode shard %q: %w", id, err)
		}
		if sh.State == state || (from != nil && !from(sh.State)) {
			return sh, nil
		}
		sh.State = state
		b, err := json.Marshal(sh)
		if err != nil {
			return Shard{}, err
		}
		txn, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(key, string(b))).
			Commit()
		if err != nil {
			return Shard{}, fmt.Errorf("%w: update shard %q: %w", ErrUnavailable, id, err)
		}
		if txn.Succeeded {
			return sh, s.waitRevision(ctx, txn.Header.Revision)
		}
	}
}

// RemoveShard deletes a shard from the registry. A shard that holds
// tenants is refused with ErrShardNotEmpty and their number. The deletion
// is a transaction that requires the shard record and every placement
// record unchanged since the revision the count was taken at, so a tenant
// placed on the shard meanwhile makes it count again rather than be left
// on a shard that no longer exists.
func (s *Store) RemoveShard(ctx context.Context, id string) (Shard, error) {
	if err := keys.ValidName("shard", id); err != nil {
		return Shard{}, err
	}
	key := shardsPrefix + id
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	for {
		s.mu.RLock()
		sh, ok := s.shards[id]
		n := 0
		for _, t := range s.tenants {
			if t.Shard == id {
				n++
			}
		}
		rev := s.rev
		s.mu.RUnlock()
		if !ok {
			return Shard{}, fmt.Errorf("%w: %q (list shards with `confetti shard list`)", ErrShardNotFound, id)
		}
		if n > 0 {
			plural := "s"
			if n == 1 {
				plural = ""
			}
			return sh, fmt.Errorf("%w: shard %s holds %d tenant%s; it can be removed once none is left on it (`confetti shard drain %s` stops new ones from landing there)", ErrShardNotEmpty, id, n, plural, id)
		}
		resp, err := s.cli.Txn(ctx).
			If(
				clientv3.Compare(clientv3.CreateRevision(key), ">", 0),
				clientv3.Compare(clientv3.ModRevision(key), "<", rev+1),
				clientv3.Compare(clientv3.ModRevision(tenantsPrefix), "<", rev+1).WithPrefix(),
			).
			Then(clientv3.OpDelete(key)).
			Commit()
		if err != nil {
			return Shard{}, fmt.Errorf("%w: remove shard %q: %w", ErrUnavailable, id, err)
		}
		// Done, or meta changed after rev: look again once the watch has
		// caught up with it.
		if err := s.waitRevision(ctx, resp.Header.Revision); err != nil {
			return Shard{}, err
		}
		if resp.Succeeded {
			return sh, nil
		}
	}
}

// PlaceOption changes how CreateTenant chooses a shard.
type PlaceOption func(*placeOptions)

type placeOptions struct {
	check func(Shard) error
}

// WithShardCheck makes CreateTenant skip every active shard for which
// check returns an error (the shard proxy passes its health view). When it
// skips them all, CreateTenant fails with ErrNoHealthyShard and every
// shard's error. check must not block for long.
func WithShardCheck(check func(Shard) error) PlaceOption {
	return func(o *placeOptions) { o.check = check }
}

// CreateTenant places a new tenant: rendezvous hashing over the active
// shards (that pass WithShardCheck, if given) proposes, the bounded-load
// cap filters, and a create-only transaction records the choice, provided
// the chosen shard is still registered. When two proxies create the same
// tenant at once, one transaction wins and both return its placement;
// created is true only for the winner. Creating an existing tenant returns
// it with ErrTenantExists.
func (s *Store) CreateTenant(ctx context.Context, name string, opts ...PlaceOption) (t Tenant, created bool, err error) {
	if err := keys.ValidName("tenant", name); err != nil {
		return Tenant{}, false, err
	}
	if err := s.Loaded(); err != nil {
		// An empty registry would read as "no shard".
		return Tenant{}, false, err
	}
	var o placeOptions
	for _, opt := range opts {
		opt(&o)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	// gone are shards found removed from meta while memory still lists
	// them.
	gone := map[string]bool{}
	for {
		if t, ok := s.Tenant(name); ok {
			return t, false, fmt.Errorf("%w: %q is on shard %s", ErrTenantExists, name, t.Shard)
		}
		shard, err := s.propose(name, o, gone)
		if err != nil {
			return Tenant{}, false, err
		}
		t = Tenant{Name: name, Shard: shard, Epoch: 1, State: TenantActive, CreateTime: time.Now().Unix()}
		b, err := json.Marshal(t)
		if err != nil {
			return Tenant{}, false, err
		}
		key, shardKey := tenantsPrefix+name, shardsPrefix+shard
		resp, err := s.cli.Txn(ctx).
			If(
				clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
				clientv3.Compare(clientv3.CreateRevision(shardKey), ">", 0),
			).
			Then(clientv3.OpPut(key, string(b))).
			Else(clientv3.OpGet(key)).
			Commit()
		if err != nil {
			return Tenant{}, false, fmt.Errorf("%w: create tenant %q: %w", ErrUnavailable, name, err)
		}
		if resp.Succeeded {
			return t, true, s.waitRevision(ctx, resp.Header.Revision)
		}
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			var cur Tenant
			if err := json.Unmarshal(kvs[0].Value, &cur); err != nil {
				return Tenant{}, false, fmt.Errorf("meta: decode tenant %q: %w", name, err)
			}
			return cur, false, fmt.Errorf("%w: %q is on shard %s", ErrTenantExists, name, cur.Shard)
		}
		// The shard was removed meanwhile: propose again without it.
		gone[shard] = true
	}
}

// propose picks a shard for a new tenant from memory.
func (s *Store) propose(name string, o placeOptions, gone map[string]bool) (string, error) {
	s.mu.RLock()
	var active []Shard
	others := 0
	for _, sh := range s.shards {
		if gone[sh.ID] {
			continue
		}
		if sh.State == ShardActive {
			active = append(active, sh)
		} else {
			others++
		}
	}
	counts := make(map[string]int, len(s.shards))
	for _, t := range s.tenants {
		counts[t.Shard]++
	}
	s.mu.RUnlock()
	if len(active) == 0 && others > 0 {
		return "", fmt.Errorf("%w: every shard is draining or pending; make one active with `confetti shard activate ID` (see `confetti shard list`), or register one with `confetti shard add ID --etcd-endpoints URL`", ErrNoShard)
	}
	candidates := active
	if o.check != nil && len(active) > 0 {
		slices.SortFunc(active, func(a, b Shard) int { return strings.Compare(a.ID, b.ID) })
		candidates = nil
		var refused []string
		for _, sh := range active {
			if err := o.check(sh); err != nil {
				refused = append(refused, fmt.Sprintf("%s: %v", sh.ID, err))
				continue
			}
			candidates = append(candidates, sh)
		}
		if len(candidates) == 0 {
			return "", fmt.Errorf("%w: tenant %q cannot be placed now: %s; retry once a shard is back (`confetti shard list` shows each shard's health)", ErrNoHealthyShard, name, strings.Join(refused, "; "))
		}
	}
	return Place(name, candidates, counts, s.cfg.LoadFactor)
}

// TokenKey returns the cluster-wide secret that signs resume tokens,
// creating it on first use. Every cache node reads the same key, so a token
// from one node is valid on all.
func (s *Store) TokenKey(ctx context.Context) ([]byte, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(tokenKeyKey), "=", 0)).
		Then(clientv3.OpPut(tokenKeyKey, string(secret))).
		Else(clientv3.OpGet(tokenKeyKey)).
		Commit()
	if err != nil {
		return nil, fmt.Errorf("%w: token key: %w", ErrUnavailable, err)
	}
	if resp.Succeeded {
		return secret, nil
	}
	return resp.Responses[0].GetResponseRange().Kvs[0].Value, nil
}

// waitRevision waits until the watch has applied rev, so that a caller's
// next read from memory sees its own write.
func (s *Store) waitRevision(ctx context.Context, rev int64) error {
	for {
		ch := s.Changed()
		if s.Revision() >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%w: wait for meta revision %d: %w", ErrUnavailable, rev, ctx.Err())
		}
	}
}

// run lists meta, then follows it by watch, listing again whenever the
// watch breaks (compaction, cancellation, lost leader).
func (s *Store) run() {
	defer s.wg.Done()
	backoff := 100 * time.Millisecond
	for s.ctx.Err() == nil {
		rev, err := s.list()
		if err == nil {
			backoff = 100 * time.Millisecond
			err = s.watch(rev)
		}
		if s.ctx.Err() != nil {
			return
		}
		s.lg.Warn("meta watch restarting", zap.Error(err), zap.Duration("backoff", backoff))
		select {
		case <-time.After(backoff):
		case <-s.ctx.Done():
			return
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (s *Store) list() (int64, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.RequestTimeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, Prefix, clientv3.WithPrefix())
	if err != nil {
		s.mu.Lock()
		s.loadErr = err
		s.mu.Unlock()
		return 0, err
	}
	shards := map[string]Shard{}
	tenants := map[string]Tenant{}
	apiKeys := map[string]APIKey{}
	caches := map[string]CacheNode{}
	for _, kv := range resp.Kvs {
		s.decode(kv, shards, tenants, apiKeys, caches)
	}
	s.mu.Lock()
	s.shards, s.tenants, s.apiKeys, s.caches = shards, tenants, apiKeys, caches
	s.rev = resp.Header.Revision
	s.loadErr = nil
	s.notifyLocked()
	s.mu.Unlock()
	s.readyOnce.Do(func() { close(s.ready) })
	return resp.Header.Revision, nil
}

func (s *Store) watch(rev int64) error {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(s.ctx))
	defer cancel()
	wch := s.cli.Watch(ctx, Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return err
		}
		s.mu.Lock()
		for _, ev := range wr.Events {
			if ev.Type == mvccpb.DELETE {
				name := string(ev.Kv.Key)
				if id, ok := strings.CutPrefix(name, shardsPrefix); ok {
					delete(s.shards, id)
				} else if t, ok := strings.CutPrefix(name, tenantsPrefix); ok {
					delete(s.tenants, t)
				} else if id, ok := strings.CutPrefix(name, apiKeysPrefix); ok {
					delete(s.apiKeys, id)
				} else if n, ok := strings.CutPrefix(name, cachesPrefix); ok {
					delete(s.caches, n)
				}
				continue
			}
			s.decode(ev.Kv, s.shards, s.tenants, s.apiKeys, s.caches)
		}
		if wr.Header.Revision > s.rev {
			s.rev = wr.Header.Revision
		}
		s.notifyLocked()
		s.mu.Unlock()
	}
	return errors.New("meta: watch closed")
}

func (s *Store) decode(kv *mvccpb.KeyValue, shards map[string]Shard, tenants map[string]Tenant, apiKeys map[string]APIKey, caches map[string]CacheNode) {
	key := string(kv.Key)
	switch {
	case strings.HasPrefix(key, shardsPrefix):
		var sh Shard
		if err := json.Unmarshal(kv.Value, &sh); err != nil {
			s.lg.Error("skipping malformed shard record", zap.String("key", key), zap.Error(err))
			return
		}
		shards[sh.ID] = sh
	case strings.HasPrefix(key, tenantsPrefix):
		var t Tenant
		if err := json.Unmarshal(kv.Value, &t); err != nil {
			s.lg.Error("skipping malformed tenant record", zap.String("key", key), zap.Error(err))
			return
		}
		tenants[t.Name] = t
	case strings.HasPrefix(key, apiKeysPrefix):
		s.decodeAPIKey(kv, apiKeys)
	case strings.HasPrefix(key, cachesPrefix):
		var c CacheNode
		if err := json.Unmarshal(kv.Value, &c); err != nil {
			s.lg.Error("skipping malformed cache node record", zap.String("key", key), zap.Error(err))
			return
		}
		caches[c.Name] = c
	}
}

func (s *Store) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}
