package shardproxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc/codes"

	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/rpcerr"
)

// ErrShardCheckFailed is returned by AddShard when the endpoints are not
// an etcd cluster the proxy can read and write with its credentials. It is
// FailedPrecondition, not Unavailable: the proxy itself is fine and
// retrying the same request does not help until the operator fixes the
// cluster, the URLs or the credentials (or adds the shard with force).
var ErrShardCheckFailed = rpcerr.New(codes.FailedPrecondition, "shardproxy: shard check failed")

// checkError is a failed shard check: what failed, and what to do.
type checkError struct {
	shard, reason, hint string
}

func (e *checkError) Error() string {
	return fmt.Sprintf("%v: shard %s: %s; %s", ErrShardCheckFailed, e.shard, e.reason, e.hint)
}

func (e *checkError) Unwrap() error { return ErrShardCheckFailed }

// healthError is what a failed check records as the shard's health: the
// reason, without the advice addressed to the one who added the shard.
func healthError(err error) error {
	var ce *checkError
	if errors.As(err, &ce) {
		return errors.New(ce.reason)
	}
	return err
}

// shardHealth is the proxy's view of its shards: whether each one answered
// its last check, and when. A loop checks every registered shard each
// interval; placement takes only shards whose last check passed within
// the staleness window, and checks at once a shard it has no fresh view
// of. A pending shard is checked as AddShard checks a new one, and made
// active when it passes. Its methods are safe for concurrent use.
type shardHealth struct {
	p        *Proxy
	interval time.Duration
	timeout  time.Duration
	// stale is how old a passed check may be for the shard to count as
	// healthy.
	stale time.Duration

	mu     sync.Mutex
	states map[string]healthState
	checks singleflight.Group

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// healthState is the outcome of a shard's last check.
type healthState struct {
	at  time.Time
	err error
}

func newShardHealth(p *Proxy) *shardHealth {
	ctx, cancel := context.WithCancel(context.Background())
	return &shardHealth{
		p:        p,
		interval: p.cfg.HealthInterval,
		timeout:  p.cfg.ShardCheckTimeout,
		stale:    3*p.cfg.HealthInterval + p.cfg.ShardCheckTimeout,
		states:   map[string]healthState{},
		ctx:      ctx,
		cancel:   cancel,
	}
}

// start runs the check loop until close.
func (h *shardHealth) start() {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		t := time.NewTicker(h.interval)
		defer t.Stop()
		for {
			h.checkAll(h.ctx, h.p.store.Shards())
			select {
			case <-t.C:
			case <-h.ctx.Done():
				return
			}
		}
	}()
}

func (h *shardHealth) close() {
	h.cancel()
	h.wg.Wait()
}

// checkAll checks shards concurrently and forgets shards that left the
// registry, with their clients.
func (h *shardHealth) checkAll(ctx context.Context, shards []meta.Shard) {
	var wg sync.WaitGroup
	for _, sh := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.check(ctx, sh)
		}()
	}
	wg.Wait()
	h.mu.Lock()
	for id := range h.states {
		if _, ok := h.p.store.Shard(id); !ok {
			delete(h.states, id)
		}
	}
	h.mu.Unlock()
	h.p.clients.Prune()
}

// check checks one shard now (concurrent checks of a shard share one) and
// records the outcome.
func (h *shardHealth) check(ctx context.Context, sh meta.Shard) error {
	if sh.State == meta.ShardPending {
		// The full check dials (and, with credentials, authenticates)
		// anew each time: a pending shard is checked once per staleness
		// window, not every interval.
		h.mu.Lock()
		st, ok := h.states[sh.ID]
		h.mu.Unlock()
		if ok && time.Since(st.at) < h.stale {
			return st.err
		}
	}
	v, _, _ := h.checks.Do(sh.ID, func() (any, error) {
		var err error
		if sh.State == meta.ShardPending {
			err = h.p.checkEndpoints(ctx, sh.ID, sh.Endpoints)
		} else {
			err = h.read(ctx, sh.ID)
		}
		if ctx.Err() != nil {
			// The caller gave up, or the proxy is closing: the check says
			// nothing about the shard.
			return err, nil
		}
		h.record(sh.ID, healthError(err))
		if err == nil && sh.State == meta.ShardPending {
			if act, aerr := h.p.store.ActivatePending(ctx, sh.ID); aerr != nil {
				h.p.lg.Warn("activating a pending shard that passed its check", zap.String("shard", sh.ID), zap.Error(aerr))
			} else if act.State == meta.ShardActive {
				h.p.lg.Info("pending shard passed its check and is active", zap.String("shard", sh.ID))
			}
		}
		return err, nil
	})
	err, _ := v.(error)
	return err
}

// read makes a linearizable one-key read on the shard through its
// long-lived client: it needs the client connected (and authenticated),
// a leader and a quorum.
func (h *shardHealth) read(ctx context.Context, id string) error {
	cli, err := h.p.clients.Get(id)
	if err != nil {
		return fmt.Errorf("no client: %v", err)
	}
	rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), h.timeout)
	defer cancel()
	if _, err := cli.Get(rctx, keys.Root, clientv3.WithCountOnly()); err != nil {
		return fmt.Errorf("a linearizable read failed: %v", err)
	}
	return nil
}

func (h *shardHealth) record(id string, err error) {
	h.mu.Lock()
	prev, seen := h.states[id]
	h.states[id] = healthState{at: time.Now(), err: err}
	h.mu.Unlock()
	switch {
	case err != nil && (!seen || prev.err == nil):
		h.p.lg.Warn("shard unhealthy: no new tenants are placed on it", zap.String("shard", id), zap.Error(err))
	case err == nil && seen && prev.err != nil:
		h.p.lg.Info("shard healthy again", zap.String("shard", id))
	}
}

// status is the recorded view of a shard: nil when its last check passed
// within the staleness window, else why it does not count as healthy.
func (h *shardHealth) status(id string) error {
	h.mu.Lock()
	st, ok := h.states[id]
	h.mu.Unlock()
	switch {
	case !ok:
		return errors.New("not checked yet")
	case st.err != nil:
		return fmt.Errorf("check at %s failed: %w", st.at.UTC().Format(time.TimeOnly), st.err)
	case time.Since(st.at) > h.stale:
		return fmt.Errorf("not checked since %s", st.at.UTC().Format(time.TimeOnly))
	}
	return nil
}

// down reports whether the last check of a shard failed.
func (h *shardHealth) down(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	st, ok := h.states[id]
	return ok && st.err != nil
}

// refresh checks, concurrently and at once, every shard of shards that
// has no fresh view, so that placement right after a start or an add
// decides from a real check.
func (h *shardHealth) refresh(ctx context.Context, shards []meta.Shard) {
	var stale []meta.Shard
	h.mu.Lock()
	for _, sh := range shards {
		if st, ok := h.states[sh.ID]; !ok || time.Since(st.at) > h.stale {
			stale = append(stale, sh)
		}
	}
	h.mu.Unlock()
	if len(stale) > 0 {
		h.checkAll(ctx, stale)
	}
}

// placeable is the placement check: a shard takes new tenants only while
// it is healthy on this proxy's view.
func (h *shardHealth) placeable(sh meta.Shard) error {
	if err := h.status(sh.ID); err != nil {
		return fmt.Errorf("unhealthy on this proxy: %w", err)
	}
	return nil
}

// checkEndpoints checks that endpoints are one etcd cluster that this
// proxy can read and write with its etcd credentials and TLS
// (meta.CheckCluster), saying what to do when they are not.
func (p *Proxy) checkEndpoints(ctx context.Context, id string, endpoints []string) error {
	forced := fmt.Sprintf("or register the shard anyway with `confetti shard add %s --etcd-endpoints %s --force`: it stays pending and takes no tenant until it passes this check", id, strings.Join(endpoints, ","))
	_, err := meta.CheckCluster(ctx, p.clients.Dial, "the proxy's", endpoints, p.cfg.ShardCheckTimeout)
	var ce *meta.ClusterCheckError
	if !errors.As(err, &ce) {
		return err
	}
	hint := "list the members of one cluster"
	switch ce.Step {
	case meta.CheckReach:
		hint = "check the URLs and the proxy's etcd settings (--etcd-username, --etcd-password-file, --etcd-cacert, --etcd-cert), " + forced
	case meta.CheckWrite:
		hint = "grant the proxy's etcd user (--etcd-username) readwrite on the prefix /confetti/, " + forced
	}
	return &checkError{shard: id, reason: ce.Reason, hint: hint}
}

// healthOf is a shard's health for the API: true, or false and why.
func (h *shardHealth) healthOf(id string) (bool, string) {
	if err := h.status(id); err != nil {
		return false, err.Error()
	}
	return true, ""
}
