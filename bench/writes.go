package bench

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/etcdapi"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/shardproxy"
)

// The paths a write takes.
const (
	PathDirect = "direct"
	PathProxy  = "proxy"
	// PathHTTP writes through the proxy's HTTP API.
	PathHTTP = "http"
	// PathEtcdAPI writes with clientv3 through a cache node's etcd front
	// door, which sends writes to the proxy.
	PathEtcdAPI = "etcdapi"
	// PathUnaryFloor is a bare gRPC unary call on loopback with nothing
	// behind it: the least any extra hop adds.
	PathUnaryFloor = "grpc-floor"
)

// WritesResult is one kind of operation on one path.
type WritesResult struct {
	Shards int    `json:"shards"`
	Op     string `json:"op"`
	Path   string `json:"path"`
	// Latency is of Ops operations sent one at a time.
	Ops     int     `json:"ops"`
	Latency Latency `json:"latency"`
	// OpsPerSec is the throughput of Ops operations from Clients
	// concurrent writers.
	Clients   int     `json:"clients"`
	OpsPerSec float64 `json:"ops_per_sec"`
	// P50VsDirect and P99VsDirect compare the proxy with etcd itself.
	P50VsDirect float64 `json:"p50_vs_direct,omitempty"`
	P99VsDirect float64 `json:"p99_vs_direct,omitempty"`
	// RateVsDirect is the throughput over that of etcd itself.
	RateVsDirect float64 `json:"rate_vs_direct,omitempty"`
	ValueBytes   int     `json:"value_bytes"`
	Error        string  `json:"error,omitempty"`
}

// writeValueBytes is the size of every written value.
const writeValueBytes = 256

// writeOp is one operation of tenant, on one path.
type writeOp func(ctx context.Context, tenant string) error

// runWrites measures put and transaction latency and throughput through
// the shard proxy and straight to etcd, on shards shard clusters that
// sync their log to disk as production etcd does. Tenants are spread over
// every shard; operations go round robin over them.
func (h *harness) runWrites(ctx context.Context, shards int) ([]WritesResult, error) {
	names := make([]string, 3*shards)
	for i := range names {
		names[i] = fmt.Sprintf("w-%d", i)
	}
	cl, err := startCluster(ctx, shards, true, names)
	if err != nil {
		return nil, err
	}
	defer cl.close()
	// The proxy has shard clients of its own, as a proxy process would.
	proxyClients := meta.NewClients(cl.store, nil)
	defer proxyClients.Close()
	p, err := shardproxy.New(cl.store, proxyClients, shardproxy.Config{TenantRPS: -1})
	if err != nil {
		return nil, err
	}
	defer p.Close()
	kvConn, stop, err := serveKV(p.Register)
	if err != nil {
		return nil, err
	}
	defer stop()
	kv := confettipb.NewKVClient(kvConn)
	etcdAPI, stopEtcdAPI, err := serveEtcdAPI(kvConn, names)
	if err != nil {
		return nil, err
	}
	defer stopEtcdAPI()
	httpAPI, stopHTTP, err := serveHTTPAPI(p)
	if err != nil {
		return nil, err
	}
	defer stopHTTP()
	direct := map[string]*clientv3.Client{}
	for _, t := range cl.tenants {
		_, cli, err := cl.shardOf(t)
		if err != nil {
			return nil, err
		}
		direct[t.Name] = cli
	}
	value := make([]byte, writeValueBytes)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	b64 := base64.StdEncoding.EncodeToString(value)
	txnJSON := []byte(`{"compare":[{"result":"GREATER","target":"VERSION","key":"http/a","version":"-1"}],"success":[` +
		`{"put":{"key":"http/a","value":"` + b64 + `"}},{"put":{"key":"http/b","value":"` + b64 + `"}}]}`)
	ops := map[string]map[string]writeOp{
		"put": {
			PathDirect: func(ctx context.Context, t string) error {
				_, err := direct[t].Put(ctx, keys.KV(t)+"direct/k", string(value))
				return err
			},
			PathProxy: func(ctx context.Context, t string) error {
				_, err := kv.Put(ctx, &confettipb.PutRequest{Tenant: t, Key: "proxy/k", Value: value})
				return err
			},
			PathHTTP: func(ctx context.Context, t string) error {
				return httpAPI.do(ctx, http.MethodPut, "/v1/tenants/"+t+"/kv/http/k", value)
			},
			PathEtcdAPI: func(ctx context.Context, t string) error {
				_, err := etcdAPI[t].Put(ctx, "etcdapi/k", string(value))
				return err
			},
		},
		// A transaction as configuration writers send them: a compare on
		// one key, two puts.
		"txn": {
			PathDirect: func(ctx context.Context, t string) error {
				k := keys.KV(t) + "direct/"
				_, err := direct[t].Txn(ctx).If(clientv3.Compare(clientv3.Version(k+"a"), ">", -1)).
					Then(clientv3.OpPut(k+"a", string(value)), clientv3.OpPut(k+"b", string(value))).Commit()
				return err
			},
			PathProxy: func(ctx context.Context, t string) error {
				put := func(k string) *confettipb.RequestOp {
					return &confettipb.RequestOp{Request: &confettipb.RequestOp_Put{Put: &confettipb.PutRequest{Key: k, Value: value}}}
				}
				_, err := kv.Txn(ctx, &confettipb.TxnRequest{
					Tenant:  t,
					Compare: []*confettipb.Compare{{Result: confettipb.Compare_GREATER, Target: confettipb.Compare_VERSION, Key: "proxy/a", TargetUnion: &confettipb.Compare_Version{Version: -1}}},
					Success: []*confettipb.RequestOp{put("proxy/a"), put("proxy/b")},
				})
				return err
			},
			PathHTTP: func(ctx context.Context, t string) error {
				return httpAPI.do(ctx, http.MethodPost, "/v1/tenants/"+t+"/txn", txnJSON)
			},
			PathEtcdAPI: func(ctx context.Context, t string) error {
				_, err := etcdAPI[t].Txn(ctx).If(clientv3.Compare(clientv3.Version("etcdapi/a"), ">", -1)).
					Then(clientv3.OpPut("etcdapi/a", string(value)), clientv3.OpPut("etcdapi/b", string(value))).Commit()
				return err
			},
		},
	}
	var out []WritesResult
	for _, op := range []string{"put", "txn"} {
		rs, err := h.compareWrites(ctx, names, op, ops[op])
		for i := range rs {
			rs[i].Shards = shards
		}
		out = append(out, rs...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// compareWrites times n operations one at a time, alternating between
// the paths so that both see the same machine load, then the throughput
// of each path with concurrent writers.
func (h *harness) compareWrites(ctx context.Context, tenants []string, op string, paths map[string]writeOp) ([]WritesResult, error) {
	n := h.cfg.WriteOps
	order := []string{PathDirect, PathProxy}
	for _, p := range []string{PathHTTP, PathEtcdAPI} {
		if paths[p] != nil {
			order = append(order, p)
		}
	}
	// Warm both paths: connections, routing, etcd's first writes.
	for i := range 50 {
		for _, p := range order {
			if err := paths[p](ctx, tenants[i%len(tenants)]); err != nil {
				return nil, fmt.Errorf("bench: %s %s: %w", op, p, err)
			}
		}
	}
	bar := startProgress(h.cfg.Progress, "writes "+op, 2*n)
	took := map[string][]time.Duration{}
	for i := range n {
		for _, p := range order {
			start := time.Now()
			if err := paths[p](ctx, tenants[i%len(tenants)]); err != nil {
				bar.finish()
				return nil, fmt.Errorf("bench: %s %s: %w", op, p, err)
			}
			took[p] = append(took[p], time.Since(start))
		}
		bar.step()
	}
	out := make([]WritesResult, len(order))
	for j, p := range order {
		out[j] = WritesResult{Op: op, Path: p, Ops: n, Clients: h.cfg.WriteClients, ValueBytes: writeValueBytes}
		out[j].Latency, _ = summarizeDurations(took[p])
		rate, err := throughput(ctx, n, h.cfg.WriteClients, func(ctx context.Context, i int) error {
			return paths[p](ctx, tenants[i%len(tenants)])
		}, bar)
		if err != nil {
			bar.finish()
			return out, fmt.Errorf("bench: %s %s: %w", op, p, err)
		}
		out[j].OpsPerSec = rate
	}
	bar.finish()
	d := out[0].Latency
	for j := 1; j < len(out) && d.P50 > 0 && d.P99 > 0; j++ {
		p := &out[j]
		p.P50VsDirect, p.P99VsDirect = p.Latency.P50/d.P50, p.Latency.P99/d.P99
		if out[0].OpsPerSec > 0 {
			p.RateVsDirect = p.OpsPerSec / out[0].OpsPerSec
		}
	}
	return out, nil
}

// throughput runs n calls of do from clients goroutines and returns the
// calls per second.
func throughput(ctx context.Context, n, clients int, do func(ctx context.Context, i int) error, bar *progress) (float64, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := do(ctx, i); err != nil {
					errs <- err
					return
				}
				if i%2 == 0 {
					bar.step()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// echoKV answers Range at once, with no store behind it.
type echoKV struct {
	confettipb.UnimplementedKVServer
}

func (echoKV) Range(context.Context, *confettipb.RangeRequest) (*confettipb.RangeResponse, error) {
	return &confettipb.RangeResponse{}, nil
}

// runUnaryFloor measures a bare gRPC unary call, served as the proxy is
// served, with nothing behind it.
func (h *harness) runUnaryFloor(ctx context.Context) (WritesResult, error) {
	res := WritesResult{Op: "unary", Path: PathUnaryFloor, Ops: h.cfg.WriteOps, Clients: h.cfg.WriteClients}
	conn, stop, err := serveKV(func(s *grpc.Server) { confettipb.RegisterKVServer(s, echoKV{}) })
	if err != nil {
		return res, err
	}
	defer stop()
	kv := confettipb.NewKVClient(conn)
	call := func(ctx context.Context, _ int) error {
		_, err := kv.Range(ctx, &confettipb.RangeRequest{Tenant: "bench", Key: "k"})
		return err
	}
	for range 200 {
		if err := call(ctx, 0); err != nil {
			return res, err
		}
	}
	took := make([]time.Duration, 0, res.Ops)
	for range res.Ops {
		start := time.Now()
		if err := call(ctx, 0); err != nil {
			return res, err
		}
		took = append(took, time.Since(start))
	}
	res.Latency, _ = summarizeDurations(took)
	res.OpsPerSec, err = throughput(ctx, res.Ops, res.Clients, call, nil)
	return res, err
}

// serveKV serves what register registers and returns a client
// connection to it, and a function that closes the connection and stops
// the server.
func serveKV(register func(*grpc.Server)) (*grpc.ClientConn, func(), error) {
	srv, err := startServer(register, nil)
	if err != nil {
		return nil, nil, err
	}
	conn, err := grpc.NewClient(srv.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		srv.stop()
		return nil, nil, err
	}
	return conn, func() { conn.Close(); srv.stop() }, nil
}

// serveEtcdAPI serves an etcd front door that writes through proxy, on a
// loopback port, and returns a clientv3 client of it for each tenant,
// authenticated as that tenant (the bench's proxy accepts any key).
func serveEtcdAPI(proxy grpc.ClientConnInterface, tenants []string) (map[string]*clientv3.Client, func(), error) {
	lis, err := etcdapi.New(etcdapi.Config{Proxy: proxy, ClusterName: "bench", Logger: zap.NewNop()}).Listen("127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	clis := map[string]*clientv3.Client{}
	stop := func() {
		for _, c := range clis {
			c.Close()
		}
		lis.Close()
	}
	for _, t := range tenants {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{lis.Addr()}, Username: t, Password: "bench", DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			stop()
			return nil, nil, err
		}
		clis[t] = c
	}
	return clis, stop, nil
}

// httpAPI is a client of the proxy's HTTP API, with connections for
// every concurrent writer.
type httpAPI struct {
	base string
	cli  *http.Client
}

// serveHTTPAPI serves p's HTTP API, a client of p's gRPC server as in a
// proxy process, on a loopback port.
func serveHTTPAPI(p *shardproxy.Proxy) (*httpAPI, func(), error) {
	srv, err := startServer(p.Register, nil)
	if err != nil {
		return nil, nil, err
	}
	h, closeGW, err := p.HTTPGateway(srv.addr)
	if err != nil {
		srv.stop()
		return nil, nil, err
	}
	addr, stopHTTP, err := startHTTP(h)
	if err != nil {
		closeGW()
		srv.stop()
		return nil, nil, err
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 256}
	return &httpAPI{base: "http://" + addr, cli: &http.Client{Transport: tr}}, func() {
		tr.CloseIdleConnections()
		stopHTTP()
		closeGW()
		srv.stop()
	}, nil
}

// do sends one request and fails unless it succeeds.
func (a *httpAPI) do(ctx context.Context, method, path string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := a.cli.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("bench: %s %s: %s %s", method, path, resp.Status, b)
	}
	return nil
}
