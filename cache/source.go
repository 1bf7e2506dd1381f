package cache

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/confetti-io/confetti/internal/keys"
)

// SourceTxn is the events of one revision of a shard, as a source delivers
// them.
type SourceTxn struct {
	Rev    int64
	Events []*mvccpb.Event
}

// Sink receives one shard's data from a Source. A Source calls it from one
// goroutine at a time, in this order: Snapshot, then Backfill once (the
// sink serves only from then on), then Apply and Progress with increasing
// revisions; after a broken stream, Restarted and a new Snapshot (and a
// Backfill again if the first never came).
type Sink interface {
	// Snapshot is a complete listing of the shard's tenant keys at rev.
	Snapshot(rev int64, kvs []*mvccpb.KeyValue)
	// Backfill is every transaction in (floor, rev of the last Snapshot];
	// floor equal to that rev means none.
	Backfill(floor int64, txns []SourceTxn)
	// Apply is whole transactions after everything delivered before.
	Apply(txns []SourceTxn)
	// Progress says there is no transaction up to rev beyond those
	// delivered.
	Progress(rev int64)
	// Restarted reports a broken stream that the source will list again.
	Restarted(err error)
}

// Source feeds one shard to a Sink until its context ends. A cache node
// sources from etcd; a tier of caches can source from another cache node.
type Source interface {
	Run(ctx context.Context, sink Sink) error
}

// etcdSource lists a shard's tenant keys at revision R, then watches from
// R+1 (from earlier, once, to backfill history), with progress
// notifications and require-leader. A watch that breaks (an error, a
// cancellation, or a stall: no response for stall although progress was
// requested) is watched again from the revision the sink has, so that the
// sink gets etcd's real transactions; it lists again only when etcd's
// history no longer covers that revision (compaction), or when the watch
// broke before the first backfill ended.
type etcdSource struct {
	cli       *clientv3.Client
	shard     string
	lg        *zap.Logger
	backfill  int64
	progress  time.Duration
	stall     time.Duration
	listLimit int64

	backfilled bool
	// delivered is the revision the sink has: the last transaction or
	// progress given to it.
	delivered int64
	// progressing is set while a progress request is under way.
	progressing atomic.Bool
}

var _ Source = (*etcdSource)(nil)

var (
	errStalled   = errors.New("cache: watch stalled")
	errCompacted = errors.New("cache: revision compacted")
)

func (s *etcdSource) Run(ctx context.Context, sink Sink) error {
	backoff := 50 * time.Millisecond
	relist := true
	for ctx.Err() == nil {
		var err error
		if relist {
			var rev int64
			if rev, err = s.list(ctx, sink); err == nil {
				backoff = 50 * time.Millisecond
				from := rev + 1
				if !s.backfilled {
					from = max(1, rev-s.backfill+1)
				}
				s.delivered = rev
				err = s.watch(ctx, sink, rev, from)
			}
		} else {
			began := time.Now()
			err = s.watch(ctx, sink, s.delivered, s.delivered+1)
			if time.Since(began) > s.stall {
				backoff = 50 * time.Millisecond
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Resuming at the sink's revision keeps etcd's transactions;
		// only history that is gone, or a first sync that never
		// finished, needs a listing.
		relist = !s.backfilled || errors.Is(err, errCompacted)
		sink.Restarted(err)
		s.lg.Warn("shard watch restarting", zap.String("shard", s.shard), zap.Error(err), zap.Bool("relist", relist), zap.Duration("backoff", backoff))
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return ctx.Err()
}

// list reads every tenant key of the shard at one revision, in pages.
func (s *etcdSource) list(ctx context.Context, sink Sink) (int64, error) {
	var kvs []*mvccpb.KeyValue
	var rev int64
	key, end := keys.Root, clientv3.GetPrefixRangeEnd(keys.Root)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(s.listLimit)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := s.cli.Get(lctx, key, opts...)
		cancel()
		if err != nil {
			return 0, fmt.Errorf("list shard %s: %w", s.shard, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		kvs = append(kvs, resp.Kvs...)
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	sink.Snapshot(rev, kvs)
	return rev, nil
}

// watch follows the shard from revision from. Transactions at or below
// listed (the listing's revision) are history only: they are collected and
// handed over in one Backfill once the watch has reached listed, and
// dropped if it breaks first.
func (s *etcdSource) watch(ctx context.Context, sink Sink, listed, from int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := s.cli.Watch(wctx, keys.Root, clientv3.WithPrefix(), clientv3.WithRev(from),
		clientv3.WithProgressNotify(), clientv3.WithCreatedNotify())

	backfilling := !s.backfilled
	var backfill []SourceTxn
	finishBackfill := func() {
		if backfilling {
			sink.Backfill(from-1, backfill)
			s.backfilled, backfilling, backfill = true, false, nil
		}
	}
	if from > listed {
		finishBackfill()
	}

	tick := time.NewTicker(s.progress)
	defer tick.Stop()
	lastResp := time.Now()
	for {
		// etcd answers a progress request only once the watch has caught
		// up, so while backfilling, asking often ends the backfill soon
		// after the last old event even when nothing new is written.
		var backfillTick <-chan time.Time
		if backfilling {
			backfillTick = time.After(25 * time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-backfillTick:
			s.requestProgress(wctx)
		case <-tick.C:
			if time.Since(lastResp) > s.stall {
				return fmt.Errorf("%w: no answer from shard %s for %s", errStalled, s.shard, time.Since(lastResp).Round(time.Millisecond))
			}
			// Ask for a bookmark: it both advances idle subscribers and
			// proves the stream alive.
			s.requestProgress(wctx)
		case wr, ok := <-wch:
			if !ok {
				return fmt.Errorf("watch of shard %s closed", s.shard)
			}
			lastResp = time.Now()
			if wr.CompactRevision != 0 {
				if !backfilling || wr.CompactRevision > listed+1 {
					// What the sink has is no longer in etcd's
					// history: only a listing catches it up.
					return fmt.Errorf("%w: watch of shard %s from %d: compacted at %d", errCompacted, s.shard, from, wr.CompactRevision)
				}
				// History before the compaction is gone: backfill from
				// the compaction revision instead.
				cancel()
				return s.watch(ctx, sink, listed, wr.CompactRevision)
			}
			if err := wr.Err(); err != nil {
				return fmt.Errorf("watch of shard %s: %w", s.shard, err)
			}
			if wr.Created {
				continue
			}
			if wr.IsProgressNotify() {
				if wr.Header.Revision >= listed {
					finishBackfill()
				}
				sink.Progress(wr.Header.Revision)
				s.delivered = max(s.delivered, wr.Header.Revision)
				continue
			}
			txns := groupByRevision(wr.Events)
			var live []SourceTxn
			for _, t := range txns {
				if t.Rev <= listed {
					if backfilling {
						backfill = append(backfill, t)
					}
					continue
				}
				live = append(live, t)
			}
			if len(live) > 0 {
				finishBackfill()
				sink.Apply(live)
				s.delivered = live[len(live)-1].Rev
			}
		}
	}
}

// requestProgress asks etcd for a bookmark without waiting for the answer:
// clientv3 holds the call until the watch stream is up, which must never
// keep the watch loop from noticing a stall. At most one request is under
// way.
func (s *etcdSource) requestProgress(ctx context.Context) {
	if !s.progressing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.progressing.Store(false)
		rctx, cancel := context.WithTimeout(ctx, s.stall)
		defer cancel()
		if err := s.cli.RequestProgress(rctx); err != nil {
			s.lg.Debug("request progress", zap.String("shard", s.shard), zap.Error(err))
		}
	}()
}

// groupByRevision splits a watch response into transactions. etcd never
// splits one revision across responses (without WithFragment).
func groupByRevision(evs []*mvccpb.Event) []SourceTxn {
	var out []SourceTxn
	for _, ev := range evs {
		rev := ev.Kv.ModRevision
		if n := len(out); n > 0 && out[n-1].Rev == rev {
			out[n-1].Events = append(out[n-1].Events, ev)
			continue
		}
		out = append(out, SourceTxn{Rev: rev, Events: []*mvccpb.Event{ev}})
	}
	return out
}
