//go:build etcdcompat

package etcdcompat

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// mirror is APISIX's config loop on clientv3: range the prefix, watch
// from the revision after it, and on a compacted watch relist and watch
// again.
type mirror struct {
	mu      sync.Mutex
	state   map[string]string
	rev     int64
	relists int
	err     error
}

func (m *mirror) run(ctx context.Context, cli *clientv3.Client, prefix string) {
	for ctx.Err() == nil {
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		state := map[string]string{}
		for _, kv := range resp.Kvs {
			state[string(kv.Key)] = string(kv.Value)
		}
		m.mu.Lock()
		m.state, m.rev = state, resp.Header.Revision
		m.relists++
		m.mu.Unlock()
		wch := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
		for wr := range wch {
			if err := wr.Err(); err != nil {
				if !errors.Is(err, rpctypes.ErrCompacted) && wr.CompactRevision == 0 {
					m.mu.Lock()
					m.err = err
					m.mu.Unlock()
				}
				break
			}
			m.mu.Lock()
			for _, ev := range wr.Events {
				if ev.Kv.ModRevision <= m.rev {
					m.err = fmt.Errorf("event %s at %d repeated (mirror at %d)", ev.Kv.Key, ev.Kv.ModRevision, m.rev)
				}
				switch ev.Type {
				case mvccpb.PUT:
					m.state[string(ev.Kv.Key)] = string(ev.Kv.Value)
				case mvccpb.DELETE:
					delete(m.state, string(ev.Kv.Key))
				}
				m.rev = ev.Kv.ModRevision
			}
			m.mu.Unlock()
		}
	}
}

func (m *mirror) snapshot() (map[string]string, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.state), m.rev, m.err
}

// compactor compacts each etcd cluster to its current revision every
// period, as root, until ctx is done; done then reports how many
// compactions it made.
func compactor(ctx context.Context, t *testing.T, endpoints []string, rootPassword string, period time.Duration) (done func() int) {
	t.Helper()
	var clis []*clientv3.Client
	for _, ep := range endpoints {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, Username: "root", Password: rootPassword, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		clis = append(clis, cli)
	}
	ctx, cancel := context.WithCancel(ctx)
	n := make(chan int, 1)
	go func() {
		compactions := 0
		defer func() { n <- compactions }()
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			for _, cli := range clis {
				resp, err := cli.Get(ctx, "compactor")
				if err != nil {
					continue
				}
				if _, err := cli.Compact(ctx, resp.Header.Revision); err == nil {
					compactions++
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() int { cancel(); return <-n }
}

// TestAPISIXLoopSurvivesACacheNodeRestart runs APISIX's loop against two
// cache nodes' etcd front doors while a writer changes keys, every shard
// etcd is compacted to its head every 100 ms, and one node is killed and
// restarted: the loop fails over and ends with exactly the state etcd
// holds, its watches resumed from the caches' history, which etcd's
// compactions do not shorten.
func TestAPISIXLoopSurvivesACacheNodeRestart(t *testing.T) {
	d := startDev(t)
	devEP := d.field(t, "cache 0 etcd", 3)
	key := d.field(t, "demo key", 2)
	extra := d.startCache(t, "127.0.0.1:0")
	extraEP := extra.etcdAddr
	// A cache role registers its etcd endpoint in meta, and MemberList
	// lists it, so that clients' endpoint sync finds it.
	waitFor(t, "the extra node in member list", func() bool {
		out, ok := etcdctl(t, extraEP, "demo:"+key, "", "member", "list")
		return ok && strings.Contains(out, "extra") && strings.Contains(out, "http://"+extraEP)
	}, extra.out)

	newClient := func(eps ...string) *clientv3.Client {
		cli, err := clientv3.New(clientv3.Config{Endpoints: eps, Username: "demo", Password: key, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		return cli
	}
	reader := newClient(extraEP, devEP)
	writer := newClient(devEP)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	m := &mirror{}
	go m.run(ctx, reader, "/apisix/")
	var shards []string
	for _, s := range []string{"a", "b", "c"} {
		shards = append(shards, "http://"+d.field(t, "etcd shard-"+s, 2))
	}
	stopCompacting := compactor(ctx, t, shards, d.secrets(t).EtcdRootPassword, 100*time.Millisecond)
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	var last int64
	write := func(i int) {
		t.Helper()
		k := fmt.Sprintf("/apisix/routes/%d", i%17)
		var rev int64
		if i%5 == 4 {
			resp, err := writer.Delete(wctx, k)
			if err != nil {
				t.Fatal(err)
			}
			rev = resp.Header.Revision
		} else {
			resp, err := writer.Put(wctx, k, fmt.Sprintf("v%d", i))
			if err != nil {
				t.Fatal(err)
			}
			rev = resp.Header.Revision
		}
		last = max(last, rev)
	}
	for i := range 100 {
		write(i)
	}
	extra.kill()
	for i := 100; i < 200; i++ {
		write(i)
	}
	d.startCache(t, extraEP)
	for i := 200; i < 300; i++ {
		write(i)
	}

	if n := stopCompacting(); n == 0 {
		t.Fatal("no compaction happened during the writes")
	}

	// etcd's state at the last write.
	want := map[string]string{}
	resp, err := writer.Get(wctx, "/apisix/", clientv3.WithPrefix(), clientv3.WithRev(last))
	if err != nil {
		t.Fatalf("%#v", err)
	}
	for _, kv := range resp.Kvs {
		want[string(kv.Key)] = string(kv.Value)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		state, rev, err := m.snapshot()
		if err != nil {
			t.Fatal(err)
		}
		if rev >= last {
			if !maps.Equal(state, want) {
				t.Fatalf("mirror at %d:\n%v\netcd at %d:\n%v", rev, state, last, want)
			}
			m.mu.Lock()
			t.Logf("the loop listed %d time(s)", m.relists)
			m.mu.Unlock()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("mirror at %d, never reached %d", rev, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
