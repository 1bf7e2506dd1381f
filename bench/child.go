package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/confetti-io/confetti/api/confettipb"
)

// ChildEnv is set to 1 in the environment of a subscriber process: the
// executable, started with Config.ChildArgs, must then call RunChild
// instead of doing what it normally does.
const ChildEnv = "CONFETTI_BENCH_CHILD"

// tickKey is the plain key of its tenant every update is written to.
const tickKey = "tick"

// The modes of a subscriber process.
const (
	// modeFanout counts every update each subscriber receives and the
	// latency from its intended send time.
	modeFanout = "fanout"
	// modeResume subscribes on the first address, and when that stream
	// ends resumes on the second from the last token, recording how the
	// resumed stream started (Reset or Events) and when the subscriber had
	// the last update.
	modeResume = "resume"
	// modeRelease subscribes each subscriber as gateway gw-<n> to the
	// spec's item and the plain key, and records when it got the plain
	// update and, when the gray selects it, the gray's version.
	modeRelease = "release"
)

// childSpec is what a subscriber process is told, as one JSON line on its
// standard input.
type childSpec struct {
	Mode   string `json:"mode"`
	Target string `json:"target"`
	// Tenants are followed round robin: subscriber g (counted over every
	// process of the run, from First) follows Tenants[g mod len] at
	// Addrs[(g / len) mod len(Addrs)] in fanout mode, at Addrs[0] then
	// Addrs[1] in resume mode.
	Tenants        []childTenant `json:"tenants"`
	First          int           `json:"first"`
	Subscribers    int           `json:"subscribers"`
	StreamsPerConn int           `json:"streams_per_conn"`
	// DistinctViews gives each subscriber a view of its own (viewPrefix).
	DistinctViews bool `json:"distinct_views,omitempty"`
	// LocalIP is the source address of every connection; empty means the
	// system's choice.
	LocalIP string `json:"local_ip,omitempty"`
	// DrainTimeout is how long, after the harness says it sent the last
	// update, subscribers may take to receive everything.
	DrainTimeout time.Duration `json:"drain_timeout"`
	// Item, GrayBasisPoints and GrayVersion are the release scenario's
	// item and the gray it waits for.
	Item            string `json:"item,omitempty"`
	GrayBasisPoints int32  `json:"gray_basis_points,omitempty"`
	GrayVersion     int64  `json:"gray_version,omitempty"`
}

// childTenant is one tenant as its subscribers see it.
type childTenant struct {
	Name string `json:"name"`
	// Key is the key etcd-target watchers watch: the physical etcd key,
	// or for the etcd front door the tenant's own.
	Key   string   `json:"key"`
	Addrs []string `json:"addrs"`
	// Expect is the measured updates of the tenant (fanout mode).
	Expect int64 `json:"expect"`
	// Mark is the update after which the process prints "mark" once every
	// subscriber has it, and Last the update that ends a subscriber's run
	// (resume mode).
	Mark int64 `json:"mark"`
	Last int64 `json:"last"`
}

// childResult is a subscriber process's report, one JSON line.
type childResult struct {
	// Hist holds the latencies in microseconds (hdrhistogram snapshot).
	Hist      *hdrhistogram.Snapshot `json:"hist,omitempty"`
	Delivered int64                  `json:"delivered"`
	Missing   int64                  `json:"missing"`
	// Incomplete counts the subscribers that did not get everything.
	Incomplete int `json:"incomplete"`
	// Disorder counts updates received twice or out of order.
	Disorder int64 `json:"disorder"`
	// LastRecv is when the last measured update arrived (Unix ns).
	LastRecv int64 `json:"last_recv"`
	// CPU is the process's CPU time from ready to the report.
	CPU    time.Duration `json:"cpu_ns"`
	MaxRSS int64         `json:"max_rss"`
	// Done is, per subscriber, when it had the last update (Unix ns; 0:
	// never), and Resets and Replays how its resumed streams started
	// (resume mode).
	Done    []int64 `json:"done,omitempty"`
	Resets  int     `json:"resets"`
	Replays int     `json:"replays"`
	// Restarts counts watches etcd or the grpc-proxy canceled and the
	// subscriber watched again.
	Restarts int    `json:"restarts"`
	Errors   int    `json:"errors"`
	FirstErr string `json:"first_error,omitempty"`
	Error    string `json:"error,omitempty"`
}

// updateValue is the value of measured update seq, intended to be sent at
// at; warmupValue the value of a warm-up update, which subscribers do not
// count.
func updateValue(seq int64, at time.Time) string {
	return strconv.FormatInt(seq, 10) + ":" + strconv.FormatInt(at.UnixNano(), 10)
}

func warmupValue(seq int) string { return "warmup-" + strconv.Itoa(seq) }

// parseValue reads an updateValue; ok is false for any other value.
func parseValue(v []byte) (seq int64, at time.Time, ok bool) {
	s, t, found := strings.Cut(string(v), ":")
	if !found {
		return 0, time.Time{}, false
	}
	seq, err1 := strconv.ParseInt(s, 10, 64)
	ns, err2 := strconv.ParseInt(t, 10, 64)
	if err1 != nil || err2 != nil {
		return 0, time.Time{}, false
	}
	return seq, time.Unix(0, ns), true
}

// RunChild is a subscriber process: it reads its spec from in, opens the
// subscriptions, prints "ready" once each holds its initial state, and
// prints its childResult once every subscriber has every update it
// expects, or when the drain timeout after the harness's "sent" line has
// passed. It returns the process's exit code.
func RunChild(in io.Reader, out io.Writer) int {
	raiseOpenFiles()
	r := bufio.NewReader(in)
	line, err := r.ReadString('\n')
	var spec childSpec
	if err == nil {
		err = json.Unmarshal([]byte(line), &spec)
	}
	if err != nil {
		b, _ := json.Marshal(childResult{Error: fmt.Sprintf("read spec: %v", err)})
		fmt.Fprintf(out, "%s\n", b)
		return 1
	}
	c := newChild(spec, out)
	return c.run(r)
}

type child struct {
	spec childSpec
	out  io.Writer
	ctx  context.Context
	stop context.CancelFunc
	dial func(ctx context.Context, addr string) (net.Conn, error)

	ready   sync.WaitGroup
	done    sync.WaitGroup
	marked  sync.WaitGroup
	pending atomic.Int64

	mu       sync.Mutex
	subs     []subscriber
	conns    map[string][]*grpc.ClientConn
	muxes    map[string]*muxStream
	clis     map[string][]*clientv3.Client
	tokens   map[string]string
	errs     int
	firstErr error
}

// subscriber is one subscription's state, touched only by its goroutine
// until the process reports.
type subscriber struct {
	tenant   *childTenant
	slot     int
	got      int64
	last     int64
	disorder int64
	doneAt   int64
	resumed  string
	restarts int
	// lat holds the subscriber's latencies and lastRecv when the last
	// arrived (Unix ns), kept per subscriber so that thousands of
	// subscribers receiving at once never wait for each other.
	lat      []time.Duration
	lastRecv int64
	ready    bool
	marked   bool
	// affected is set on a release-scenario subscriber the gray selects.
	affected bool
}

func newChild(spec childSpec, out io.Writer) *child {
	c := &child{spec: spec, out: out, conns: map[string][]*grpc.ClientConn{}, muxes: map[string]*muxStream{}, clis: map[string][]*clientv3.Client{}, tokens: map[string]string{}}
	c.ctx, c.stop = context.WithCancel(context.Background())
	d := &net.Dialer{}
	if spec.LocalIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(spec.LocalIP)}
		d.Control = bindLate
	}
	c.dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	c.subs = make([]subscriber, spec.Subscribers)
	perAddr := map[string]int{}
	for i := range c.subs {
		t, a := c.place(i)
		c.subs[i] = subscriber{tenant: t, slot: perAddr[a] / spec.StreamsPerConn, last: -1}
		perAddr[a]++
	}
	return c
}

// view names subscriber i's own view, unique over every process of the
// run.
func (c *child) view(i int) string { return strconv.Itoa(c.spec.First + i) }

// prefixes are what subscriber i subscribes to: its tenant's tick key,
// and with distinct views a prefix of its own that nothing is written
// under.
func (c *child) prefixes(i int) []string {
	if c.spec.DistinctViews {
		return []string{tickKey, "view/" + c.view(i) + "/"}
	}
	return []string{tickKey}
}

// place returns subscriber i's tenant and first address.
func (c *child) place(i int) (*childTenant, string) { return c.spec.placement(i) }

// placement returns the tenant and first address of the process's
// subscriber i.
func (s *childSpec) placement(i int) (*childTenant, string) {
	g := s.First + i
	t := &s.Tenants[g%len(s.Tenants)]
	if s.Mode == modeResume {
		return t, t.Addrs[0]
	}
	return t, t.Addrs[(g/len(s.Tenants))%len(t.Addrs)]
}

func (c *child) run(in *bufio.Reader) int {
	n := len(c.subs)
	c.ready.Add(n)
	c.done.Add(n)
	c.marked.Add(n)
	c.pending.Store(int64(n))
	for i := range c.subs {
		if c.spec.Mode == modeRelease {
			// Complete before its stream ends: it marks itself done.
			go c.subscribeRelease(i)
			continue
		}
		go func() {
			defer c.done.Done()
			switch {
			case etcdTarget(c.spec.Target):
				c.watchEtcd(i)
			case httpTarget(c.spec.Target):
				c.subscribeSSE(i)
			default:
				c.subscribeCache(i)
			}
		}()
	}
	c.ready.Wait()
	c.mu.Lock()
	err := c.firstErr
	c.mu.Unlock()
	if err != nil {
		return c.report(childResult{Error: err.Error()})
	}
	fmt.Fprintln(c.out, "ready")
	cpu0 := cpuTime()
	if c.spec.Mode == modeResume || c.spec.Mode == modeRelease {
		go func() {
			c.marked.Wait()
			fmt.Fprintln(c.out, "mark")
		}()
	}
	sent := make(chan struct{})
	go func() {
		for {
			line, err := in.ReadString('\n')
			if strings.TrimSpace(line) == "sent" || err != nil {
				close(sent)
				return
			}
		}
	}()
	finished := make(chan struct{})
	go func() { c.done.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-sent:
		select {
		case <-finished:
		case <-time.After(c.spec.DrainTimeout):
		}
	}
	c.stop()
	select {
	case <-finished:
	case <-time.After(10 * time.Second):
	}
	res := c.collect()
	res.CPU = cpuTime() - cpu0
	res.MaxRSS = maxRSS()
	return c.report(res)
}

// collect reads every subscriber's state. Subscribers still running
// after the drain timeout are read as they are: a count that is late by
// one update is reported as missing, which it is.
func (c *child) collect() childResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	res := childResult{Errors: c.errs}
	if c.firstErr != nil {
		res.FirstErr = c.firstErr.Error()
	}
	hist := newHistogram()
	for i := range c.subs {
		s := &c.subs[i]
		for _, d := range s.lat {
			record(hist, d)
		}
		res.LastRecv = max(res.LastRecv, s.lastRecv)
		res.Disorder += s.disorder
		res.Restarts += s.restarts
		switch c.spec.Mode {
		case modeRelease:
			res.Done = append(res.Done, s.doneAt)
			if s.got == 0 {
				res.Missing++
			}
			if s.affected && s.doneAt == 0 {
				res.Incomplete++
			}
		case modeResume:
			res.Done = append(res.Done, s.doneAt)
			if s.doneAt == 0 {
				res.Incomplete++
			}
			switch s.resumed {
			case "reset":
				res.Resets++
			case "events":
				res.Replays++
			}
		default:
			if miss := s.tenant.Expect - s.got; miss > 0 {
				res.Missing += miss
				res.Incomplete++
			}
		}
	}
	res.Hist, res.Delivered = hist.Export(), hist.TotalCount()
	return res
}

func (c *child) report(res childResult) int {
	b, _ := json.Marshal(res)
	fmt.Fprintf(c.out, "%s\n", b)
	if res.Error != "" {
		return 1
	}
	return 0
}

// fail records a subscriber's error; before it was ready, the process
// reports the first such error instead of "ready".
func (c *child) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx.Err() != nil {
		return
	}
	c.errs++
	if c.firstErr == nil {
		c.firstErr = err
	}
}

func (c *child) markReady(i int) {
	if s := &c.subs[i]; !s.ready {
		s.ready = true
		c.ready.Done()
	}
}

// deliver counts one received value for subscriber i and reports whether
// the subscriber has everything it waits for.
func (c *child) deliver(i int, value []byte) bool {
	s := &c.subs[i]
	seq, at, ok := parseValue(value)
	if !ok {
		return false
	}
	now := time.Now()
	if seq <= s.last {
		s.disorder++
		return false
	}
	s.last = seq
	s.got++
	if c.spec.Mode == modeResume {
		if !s.marked && seq >= s.tenant.Mark {
			s.marked = true
			c.marked.Done()
		}
		return c.finishedAt(i, seq, now)
	}
	s.lat = append(s.lat, now.Sub(at))
	s.lastRecv = now.UnixNano()
	return c.complete(i)
}

// complete reports whether fan-out subscriber i has every update it
// expects (at once, for a tenant that gets none).
func (c *child) complete(i int) bool {
	s := &c.subs[i]
	return c.spec.Mode == modeFanout && s.got >= s.tenant.Expect
}

// finishedAt records when a resuming subscriber reached the last update.
func (c *child) finishedAt(i int, seq int64, now time.Time) bool {
	s := &c.subs[i]
	if seq < s.tenant.Last {
		return false
	}
	if s.doneAt == 0 {
		s.doneAt = now.UnixNano()
	}
	return true
}

// windows are the static flow-control windows of every client of every
// target, as the gateway SDK sets them: with gRPC's default dynamic
// windows a client answers each message that follows a quiet spell with
// a bandwidth-probing PING, which costs both ends as much as the message.
var windows = [2]grpc.DialOption{grpc.WithInitialWindowSize(2 << 20), grpc.WithInitialConnWindowSize(4 << 20)}

// cacheConn returns connection slot of the pool for addr.
func (c *child) cacheConn(addr string, slot int) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pool := c.conns[addr]
	for len(pool) <= slot {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(c.dial), windows[0], windows[1])
		if err != nil {
			return nil, err
		}
		pool = append(pool, cc)
	}
	c.conns[addr] = pool
	return pool[slot], nil
}

// etcdClient returns client slot of the pool for addr.
func (c *child) etcdClient(addr string, slot int) (*clientv3.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pool := c.clis[addr]
	for len(pool) <= slot {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints: []string{addr}, DialTimeout: 10 * time.Second, Logger: zap.NewNop(),
			DialOptions: []grpc.DialOption{grpc.WithContextDialer(c.dial), windows[0], windows[1]},
		})
		if err != nil {
			return nil, err
		}
		pool = append(pool, cli)
	}
	c.clis[addr] = pool
	return pool[slot], nil
}

// etcdToken authenticates as tenant at the etcd front door once per
// process; the bench's cache nodes accept any API key.
func (c *child) etcdToken(cli *clientv3.Client, tenant string) (string, error) {
	c.mu.Lock()
	token, ok := c.tokens[tenant]
	c.mu.Unlock()
	if ok {
		return token, nil
	}
	ctx, cancel := context.WithTimeout(c.ctx, time.Minute)
	defer cancel()
	resp, err := cli.Authenticate(ctx, tenant, "bench")
	if err != nil {
		return "", fmt.Errorf("authenticate as %s: %w", tenant, err)
	}
	c.mu.Lock()
	c.tokens[tenant] = resp.Token
	c.mu.Unlock()
	return resp.Token, nil
}

// maxRestarts bounds how often one etcd watcher is watched again before
// its error counts as a failure.
const maxRestarts = 100

// watchEtcd is subscriber i as an etcd watcher of its tenant's key. A
// watch that etcd (or the grpc-proxy) cancels is watched again from the
// next revision, as an etcd application must: nothing is lost, and the
// restart is counted.
func (c *child) watchEtcd(i int) {
	s := &c.subs[i]
	_, addr := c.place(i)
	cli, err := c.etcdClient(addr, s.slot)
	if err != nil {
		c.fail(err)
		c.markReady(i)
		return
	}
	ctx := c.ctx
	if c.spec.Target == TargetEtcdAPI {
		// The front door's user is the tenant: the watch stream carries
		// the tenant's token, as clientv3 sends it after Authenticate.
		// Watchers of several tenants on one client get a stream each.
		token, err := c.etcdToken(cli, s.tenant.Name)
		if err != nil {
			c.fail(err)
			c.markReady(i)
			return
		}
		ctx = metadata.AppendToOutgoingContext(ctx, rpctypes.TokenFieldNameGRPC, token)
	}
	next := int64(0)
	for {
		opts := []clientv3.OpOption{clientv3.WithCreatedNotify()}
		if next > 0 {
			opts = append(opts, clientv3.WithRev(next))
		}
		err := errors.New("watch closed")
		if c.spec.DistinctViews {
			// A range that holds the tick key alone, and ends where no
			// other subscriber's does: etcd's grpc-proxy shares a watch
			// between watchers of the same range only.
			opts = append(opts, clientv3.WithRange(s.tenant.Key+"\x00"+c.view(i)))
		}
		for wr := range cli.Watch(ctx, s.tenant.Key, opts...) {
			if err = wr.Err(); err != nil {
				break
			}
			if wr.Created {
				if next == 0 {
					next = wr.Header.Revision + 1
				}
				c.markReady(i)
				if c.complete(i) {
					return
				}
			}
			for _, ev := range wr.Events {
				next = ev.Kv.ModRevision + 1
				if c.deliver(i, ev.Kv.Value) {
					return
				}
			}
		}
		if c.ctx.Err() != nil {
			return
		}
		if s.restarts >= maxRestarts {
			c.fail(fmt.Errorf("watch canceled %d times: %w", s.restarts+1, err))
			c.markReady(i)
			return
		}
		s.restarts++
	}
}

// subscribeCache is subscriber i as a Cache.Subscribe client. In resume
// mode, when its stream on the first address ends, it subscribes again on
// the second from its last token, retrying until the process ends.
func (c *child) subscribeCache(i int) {
	s := &c.subs[i]
	_, addr := c.place(i)
	token := ""
	resuming := false
	for {
		done, err := c.stream(i, addr, &token, resuming)
		if done {
			return
		}
		if c.ctx.Err() != nil {
			return
		}
		if c.spec.Mode != modeResume || !s.ready {
			c.fail(err)
			c.markReady(i)
			return
		}
		if !resuming {
			resuming, addr = true, s.tenant.Addrs[1]
			continue
		}
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stream runs subscriber i's subscription at addr from *token, keeping
// *token current, until the subscriber has everything (done) or the
// subscription ends.
func (c *child) stream(i int, addr string, token *string, resuming bool) (done bool, err error) {
	s := &c.subs[i]
	h := &cacheSub{c: c, i: i, token: token, resuming: resuming}
	start := &confettipb.Start{Tenant: s.tenant.Name, Prefixes: c.prefixes(i), Token: *token}
	if err := c.subscription(i, addr, start, h.handle); err != nil {
		return false, err
	}
	return true, nil
}

// subscription runs subscriber i's subscription at addr, handing every
// message to handle, until handle reports the subscriber done (nil) or
// the subscription ends (its error). With several subscriptions per
// connection they share the connection's SubscribeMany stream, as etcd's
// watchers share a Watch stream; with one, it is a Subscribe stream of
// its own.
func (c *child) subscription(i int, addr string, start *confettipb.Start, handle func(*confettipb.SubscribeResponse) bool) error {
	slot := c.subs[i].slot
	if c.spec.StreamsPerConn > 1 {
		ms, err := c.manyStream(addr, slot)
		if err != nil {
			return err
		}
		return <-ms.open(int64(i+1), start, handle)
	}
	cc, err := c.cacheConn(addr, slot)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	st, err := confettipb.NewCacheClient(cc).Subscribe(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Start{Start: start}}); err != nil {
		return err
	}
	for {
		m, err := st.Recv()
		if err != nil {
			return err
		}
		if handle(m) {
			return nil
		}
	}
}

// cacheSub is one subscription's handling of what it receives.
type cacheSub struct {
	c          *child
	i          int
	token      *string
	resuming   bool
	resetValue []byte
}

// handle applies one message; it reports whether the subscriber has
// everything it waits for.
func (h *cacheSub) handle(m *confettipb.SubscribeResponse) bool {
	c, i := h.c, h.i
	s := &c.subs[i]
	switch {
	case m.GetReset_() != nil:
		r := m.GetReset_()
		if h.resuming && s.resumed == "" {
			s.resumed = "reset"
		}
		for _, kv := range r.Kvs {
			if kv.Key == tickKey {
				h.resetValue = kv.Value
			}
		}
		if !r.Last {
			return false
		}
		*h.token = r.Token
		c.markReady(i)
		if c.complete(i) {
			return true
		}
		// A Reset replaces the state: on a resumed stream it brings the
		// subscriber up to date as replayed events would.
		if h.resuming {
			if seq, _, ok := parseValue(h.resetValue); ok {
				s.last = max(s.last, seq)
				if c.finishedAt(i, seq, time.Now()) {
					return true
				}
			}
		}
	case m.GetEvents() != nil:
		if h.resuming && s.resumed == "" {
			s.resumed = "events"
		}
		for _, t := range m.GetEvents().GetTxns() {
			*h.token = t.GetToken()
			for _, ev := range t.Events {
				if c.deliver(i, ev.Kv.Value) {
					return true
				}
			}
		}
	case m.GetProgress() != nil:
		*h.token = m.GetProgress().GetToken()
	}
	return false
}

// manyStream returns the SubscribeMany stream of connection slot of the
// pool for addr, opening it (again, once it ended).
func (c *child) manyStream(addr string, slot int) (*muxStream, error) {
	cc, err := c.cacheConn(addr, slot)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	key := fmt.Sprintf("%s/%d", addr, slot)
	if ms := c.muxes[key]; ms != nil && !ms.ended() {
		return ms, nil
	}
	st, err := confettipb.NewCacheClient(cc).SubscribeMany(c.ctx)
	if err != nil {
		return nil, err
	}
	ms := &muxStream{st: st, subs: map[int64]*muxSub{}}
	c.muxes[key] = ms
	go ms.receive()
	return ms, nil
}

// muxStream is a SubscribeMany stream shared by the subscribers of one
// connection. Its receive loop hands each message to the subscriptions it
// names.
type muxStream struct {
	st     confettipb.Cache_SubscribeManyClient
	sendMu sync.Mutex

	mu   sync.Mutex
	subs map[int64]*muxSub
	err  error
}

// muxSub is one subscription of a muxStream.
type muxSub struct {
	handle func(*confettipb.SubscribeResponse) bool
	// done gets nil once handle reports the subscriber done, else the
	// error that ended the subscription.
	done chan error
}

// open starts subscription id; the returned channel says how it ended.
func (ms *muxStream) open(id int64, start *confettipb.Start, handle func(*confettipb.SubscribeResponse) bool) <-chan error {
	sub := &muxSub{handle: handle, done: make(chan error, 1)}
	ms.mu.Lock()
	if ms.err != nil {
		sub.done <- ms.err
		ms.mu.Unlock()
		return sub.done
	}
	ms.subs[id] = sub
	ms.mu.Unlock()
	ms.sendMu.Lock()
	err := ms.st.Send(&confettipb.SubscribeRequest{SubscriptionId: id, Request: &confettipb.SubscribeRequest_Start{Start: start}})
	ms.sendMu.Unlock()
	if err != nil {
		ms.end(err)
	}
	return sub.done
}

func (ms *muxStream) ended() bool {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.err != nil
}

// end ends every subscription of the stream with err.
func (ms *muxStream) end(err error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.err == nil {
		ms.err = err
	}
	for id, sub := range ms.subs {
		sub.done <- ms.err
		delete(ms.subs, id)
	}
}

func (ms *muxStream) receive() {
	for {
		m, err := ms.st.Recv()
		if err != nil {
			ms.end(err)
			return
		}
		ms.mu.Lock()
		for _, id := range m.SubscriptionIds {
			sub := ms.subs[id]
			if sub == nil {
				continue
			}
			var err error
			if cl := m.GetClosed(); cl != nil {
				err = status.Error(codes.Code(cl.Code), "subscription closed: "+cl.Message)
			} else if !sub.handle(m) {
				continue
			}
			sub.done <- err
			delete(ms.subs, id)
		}
		ms.mu.Unlock()
	}
}
