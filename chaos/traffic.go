package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/confetti-io/confetti/api/confettipb"
)

// Op is one client operation of the history, as the report's
// operations.jsonl holds it. Times are nanoseconds since the run started.
type Op struct {
	Client int    `json:"client"`
	Tenant string `json:"tenant"`
	Shard  string `json:"shard"`
	Proxy  string `json:"proxy"`
	// Kind is get, put, delete, cas (put Value if Key holds Expect, or is
	// absent when Expect is empty), pair (a transaction putting Value at
	// Key+"a" and Key+"b": one revision, two events) or ttl (a put with a
	// 2 s TTL, outside the linearizability check: it expires).
	Kind   string `json:"kind"`
	Key    string `json:"key"`
	Value  string `json:"value,omitempty"`
	Expect string `json:"expect,omitempty"`
	Call   int64  `json:"call"`
	Return int64  `json:"return"`
	// OK: the request succeeded (for a cas, that it was answered);
	// Swapped: the cas's compare held. Found and Got: a get's answer.
	OK      bool   `json:"ok"`
	Swapped bool   `json:"swapped,omitempty"`
	Found   bool   `json:"found,omitempty"`
	Got     string `json:"got,omitempty"`
	// Err is the error of a failed request; Unknown marks a failed write
	// that may or may not have been applied (a timeout, a broken
	// connection): the checker lets it take effect at any time after its
	// call, or never.
	Err     string `json:"err,omitempty"`
	Unknown bool   `json:"unknown,omitempty"`
	// Ended marks a request cut short by the end of the traffic, left
	// out of the availability figures.
	Ended bool `json:"ended,omitempty"`
}

// Tenant is a tenant of the run and the shard it lives on.
type Tenant struct {
	Name, Shard string
}

// linKeys are each tenant's keys under the linearizability check.
const linKeys = 4

// traffic runs writers through every proxy and records their history.
type traffic struct {
	start   time.Time
	tenants []Tenant
	proxies []*grpc.ClientConn
	names   []string
	key     string
	// pause is each writer's wait between two requests.
	pause time.Duration

	mu     sync.Mutex
	ops    []Op
	nextID int
}

func (tr *traffic) now() int64 { return int64(time.Since(tr.start)) }

func (tr *traffic) clientID() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.nextID++
	return tr.nextID - 1
}

func (tr *traffic) record(op Op) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.ops = append(tr.ops, op)
}

// History returns the operations recorded so far.
func (tr *traffic) History() []Op {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]Op(nil), tr.ops...)
}

// run starts writers goroutines until ctx ends, writer w writing to
// tenant w modulo the tenants, and a prober per tenant.
func (tr *traffic) run(ctx context.Context, writers int, seed uint64) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() { tr.writer(ctx, w, rand.New(rand.NewPCG(seed, uint64(w)+1))) })
	}
	for _, tn := range tr.tenants {
		wg.Go(func() { tr.probe(ctx, tn, &wg) })
	}
	return &wg
}

// probeEvery is how often a prober starts a write: a closed-loop writer
// stuck in a timed-out request cannot say when its tenant could write
// again; probes that do not wait for each other can, to this resolution.
const probeEvery = 100 * time.Millisecond

// probe writes the tenant's probe key every probeEvery, each write on its
// own, through the proxies in turn.
func (tr *traffic) probe(ctx context.Context, tn Tenant, wg *sync.WaitGroup) {
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		p := n % len(tr.proxies)
		op := Op{Client: -1, Tenant: tn.Name, Shard: tn.Shard, Proxy: tr.names[p], Kind: "put", Key: "probe", Value: fmt.Sprintf("probe-%d", n)}
		wg.Go(func() {
			tr.do(ctx, confettipb.NewKVClient(tr.proxies[p]), &op)
			tr.record(op)
		})
	}
}

func (tr *traffic) writer(ctx context.Context, w int, rng *rand.Rand) {
	client := tr.clientID()
	seen := map[string]string{} // last value this writer knows per key
	for n := 0; ctx.Err() == nil; n++ {
		tn := tr.tenants[w%len(tr.tenants)]
		p := (w + n) % len(tr.proxies)
		op := Op{Client: client, Tenant: tn.Name, Shard: tn.Shard, Proxy: tr.names[p],
			Key: fmt.Sprintf("lin/k%d", rng.IntN(linKeys)), Value: fmt.Sprintf("w%d-%d", w, n)}
		switch r := rng.IntN(100); {
		case r < 30:
			op.Kind = "put"
		case r < 55:
			op.Kind = "get"
		case r < 62:
			op.Kind = "delete"
		case r < 85:
			op.Kind = "cas"
			op.Expect = seen[tn.Name+"/"+op.Key]
		case r < 90:
			op.Kind, op.Key = "pair", "pair/"
		default:
			op.Kind, op.Key = "ttl", fmt.Sprintf("ttl/w%d", w)
		}
		tr.do(ctx, confettipb.NewKVClient(tr.proxies[p]), &op)
		switch {
		case op.OK && op.Kind == "get":
			seen[tn.Name+"/"+op.Key] = op.Got
		case op.OK && (op.Kind == "put" || op.Kind == "cas" && op.Swapped):
			seen[tn.Name+"/"+op.Key] = op.Value
		case op.OK && op.Kind == "delete":
			seen[tn.Name+"/"+op.Key] = ""
		}
		tr.record(op)
		if op.Unknown {
			// A write of unknown outcome stays open to the end of the
			// history: the writer goes on as a new client.
			client = tr.clientID()
		}
		select {
		case <-ctx.Done():
		case <-time.After(tr.pause):
		}
	}
}

// do performs op through kv and fills in its outcome.
func (tr *traffic) do(ctx context.Context, kv confettipb.KVClient, op *Op) {
	rctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "x-api-key", tr.key), 3*time.Second)
	defer cancel()
	op.Call = tr.now()
	var err error
	switch op.Kind {
	case "get":
		var resp *confettipb.RangeResponse
		resp, err = kv.Range(rctx, &confettipb.RangeRequest{Tenant: op.Tenant, Key: op.Key, Linearizable: true})
		if err == nil && len(resp.Kvs) > 0 {
			op.Found, op.Got = true, string(resp.Kvs[0].Value)
		}
	case "put":
		_, err = kv.Put(rctx, &confettipb.PutRequest{Tenant: op.Tenant, Key: op.Key, Value: []byte(op.Value)})
	case "ttl":
		_, err = kv.Put(rctx, &confettipb.PutRequest{Tenant: op.Tenant, Key: op.Key, Value: []byte(op.Value), Ttl: 2})
	case "delete":
		_, err = kv.DeleteRange(rctx, &confettipb.DeleteRangeRequest{Tenant: op.Tenant, Key: op.Key})
	case "pair":
		put := func(k string) *confettipb.RequestOp {
			return &confettipb.RequestOp{Request: &confettipb.RequestOp_Put{Put: &confettipb.PutRequest{Key: op.Key + k, Value: []byte(op.Value)}}}
		}
		_, err = kv.Txn(rctx, &confettipb.TxnRequest{Tenant: op.Tenant, Success: []*confettipb.RequestOp{put("a"), put("b")}})
	case "cas":
		cmp := &confettipb.Compare{Key: op.Key, Target: confettipb.Compare_VALUE, TargetUnion: &confettipb.Compare_Value{Value: []byte(op.Expect)}}
		if op.Expect == "" {
			cmp = &confettipb.Compare{Key: op.Key, Target: confettipb.Compare_VERSION, TargetUnion: &confettipb.Compare_Version{Version: 0}}
		}
		var resp *confettipb.TxnResponse
		resp, err = kv.Txn(rctx, &confettipb.TxnRequest{Tenant: op.Tenant, Compare: []*confettipb.Compare{cmp},
			Success: []*confettipb.RequestOp{{Request: &confettipb.RequestOp_Put{Put: &confettipb.PutRequest{Key: op.Key, Value: []byte(op.Value)}}}}})
		if err == nil {
			op.Swapped = resp.Succeeded
		}
	}
	op.Return = tr.now()
	if err == nil {
		op.OK = true
		return
	}
	op.Err = err.Error()
	op.Ended = ctx.Err() != nil
	if op.Kind != "get" && !definite(err) {
		op.Unknown = true
	}
}

// definite reports whether a failed write is known not to have been
// applied: the proxy refused it before it reached etcd.
func definite(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated, codes.NotFound, codes.ResourceExhausted, codes.OutOfRange:
		return true
	}
	return false
}
