package cache

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/rpcerr"
)

// Range reads a tenant's keys from this node's state. With linearizable
// set it first learns the shard's current revision with a quorum read and
// waits (bounded) until the watch has reached it, so the answer is at
// least as new as any write acknowledged before the call.
func (c *Cache) Range(ctx context.Context, req *confettipb.RangeRequest) (*confettipb.RangeResponse, error) {
	resp, err := c.rangeKV(ctx, req)
	return resp, rpcerr.Status(err)
}

func (c *Cache) rangeKV(ctx context.Context, req *confettipb.RangeRequest) (*confettipb.RangeResponse, error) {
	if req.GetRevision() != 0 {
		return nil, ErrOldRevision
	}
	tenant, err := c.store.LookupTenant(ctx, req.GetTenant())
	if err != nil {
		return nil, err
	}
	r, err := keys.KVRange(tenant.Name, req.GetKey(), req.GetRangeEnd(), req.GetPrefix())
	if err != nil {
		return nil, err
	}
	need := int64(0)
	if req.GetLinearizable() {
		cli, err := c.clients.Get(tenant.Shard)
		if err != nil {
			return nil, err
		}
		qctx, cancel := context.WithTimeout(ctx, c.cfg.SyncWait)
		resp, err := cli.Get(qctx, keys.Fence(tenant.Name), clientv3.WithCountOnly())
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%w: %s, for a linearizable read: %w; retry, or read without linearizable", ErrShardUnavailable, tenant.Shard, err)
		}
		need = resp.Header.Revision
	}
	st, err := c.waitSynced(ctx, tenant.Shard, need)
	if err != nil {
		return nil, err
	}
	// Physical range -> tenant-relative range.
	prefix := keys.Tenant(tenant.Name)
	start, end := strings.TrimPrefix(r.Start, prefix), ""
	if r.End != "" {
		var ok bool
		if end, ok = strings.CutPrefix(r.End, prefix); !ok {
			end = keys.PrefixEnd(keys.SpaceKV)
		}
	}
	tr, rev := st.snapshot(tenant.Name)
	out := &confettipb.RangeResponse{Header: &confettipb.ResponseHeader{Tenant: tenant.Name, Shard: tenant.Shard, Revision: rev, Epoch: tenant.Epoch}}
	if tr == nil {
		return out, nil
	}
	visit := func(e entry) bool {
		if r.End == "" && e.key != start {
			return false
		}
		if r.End != "" && !inRange(e.key, start, end) {
			return false
		}
		out.Count++
		if req.GetCountOnly() || (req.GetLimit() > 0 && int64(len(out.Kvs)) >= req.GetLimit()) {
			if !req.GetCountOnly() {
				out.More = true
			}
			return true
		}
		kv := &confettipb.KeyValue{
			Key:            strings.TrimPrefix(e.key, keys.SpaceKV),
			CreateRevision: e.kv.CreateRevision,
			ModRevision:    e.kv.ModRevision,
			Version:        e.kv.Version,
			Lease:          e.kv.Lease,
		}
		if !req.GetKeysOnly() {
			kv.Value = e.kv.Value
		}
		out.Kvs = append(out.Kvs, kv)
		return true
	}
	tr.AscendGreaterOrEqual(entry{key: start}, visit)
	return out, nil
}

// Status reports each shard's revision, history window and sync state.
// For a shard not synced, last_error says why: the first sync is under
// way, or why the node gave up on it (its tenants are unavailable here).
func (c *Cache) Status(ctx context.Context, _ *confettipb.CacheStatusRequest) (*confettipb.CacheStatusResponse, error) {
	out := &confettipb.CacheStatusResponse{Node: c.cfg.NodeName}
	c.mu.RLock()
	for _, subs := range c.subs {
		out.Subscribers += int64(len(subs))
	}
	c.mu.RUnlock()
	for _, sh := range c.store.Shards() {
		ss := &confettipb.ShardStatus{Shard: sh.ID, Endpoints: sh.Endpoints}
		if st := c.shard(sh.ID); st != nil {
			st.mu.RLock()
			ss.Revision, ss.Synced, ss.WatchRestarts, ss.Relists, ss.LastError = st.rev, st.synced, st.restarts, st.relists, st.lastErr
			ss.Tenants = int64(len(st.tenants))
			for _, t := range st.tenants {
				ss.Keys += int64(t.Len())
			}
			if st.hist != nil {
				ss.HistoryStart, ss.HistoryEvents, ss.HistoryBytes = st.hist.floor, int64(st.hist.events), st.hist.bytes
			}
			st.mu.RUnlock()
			if cli := c.sourceClient(sh.ID); cli != nil {
				qctx, cancel := context.WithTimeout(ctx, time.Second)
				if resp, err := cli.Get(qctx, keys.Root, clientv3.WithCountOnly()); err == nil {
					ss.EtcdRevision = resp.Header.Revision
				}
				cancel()
			}
		}
		if _, err := c.shardAvailability(sh.ID); err != nil {
			ss.LastError = err.Error()
		}
		out.Shards = append(out.Shards, ss)
	}
	return out, nil
}
