package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/cache"
	"github.com/confetti-io/confetti/internal/apijson"
	"github.com/confetti-io/confetti/internal/sse"
)

// The HTTP targets: subscribers read Server-Sent Events over HTTP/1.1, a
// connection each, from the cache nodes' SSE door (sse) or from a bare
// TCP server that writes the same event bytes to every connection
// (tcpfloor, the cost of the system calls alone).

// startHTTP serves h on a loopback port.
func startHTTP(h http.Handler) (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) //nolint:errcheck // ends with ErrServerClosed
	return ln.Addr().String(), func() { srv.Close() }, nil
}

// TCPFloor is the physical floor of the SSE door: a TCP server that
// answers a subscribe request with an empty state and then writes each
// published value, encoded once as the SSE door encodes an events
// message, to every connection of the value's tenant. Writers, one per
// CPU, each own a share of the connections; there is no per-connection
// goroutine, queue or encoding.
type TCPFloor struct {
	ln      net.Listener
	writers []*floorWriter
	wg      sync.WaitGroup

	mu   sync.Mutex
	next int
	rev  int64
}

// floorWriter writes to its share of the connections.
type floorWriter struct {
	in    chan floorMsg
	mu    sync.Mutex
	conns map[string][]net.Conn
}

type floorMsg struct {
	tenant string
	b      []byte
}

// StartTCPFloor listens on a loopback port.
func StartTCPFloor() (*TCPFloor, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &TCPFloor{ln: ln}
	for range runtime.GOMAXPROCS(0) {
		w := &floorWriter{in: make(chan floorMsg, 1024), conns: map[string][]net.Conn{}}
		f.writers = append(f.writers, w)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			w.run()
		}()
	}
	go f.accept()
	return f, nil
}

// Addr is the floor's address.
func (f *TCPFloor) Addr() string { return f.ln.Addr().String() }

func (f *TCPFloor) accept() {
	for {
		conn, err := f.ln.Accept()
		if err != nil {
			return
		}
		go f.open(conn)
	}
}

// open reads a subscribe request, answers it with an empty state, and
// hands the connection to a writer.
func (f *TCPFloor) open(conn net.Conn) {
	req, err := http.ReadRequest(bufio.NewReader(conn))
	tenant, ok := subscribeTenant(req, err)
	if !ok {
		conn.Write([]byte("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")) //nolint:errcheck // closing anyway
		conn.Close()
		return
	}
	head := "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
	reset := cache.SSEEvent(&confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Reset_{Reset_: &confettipb.Reset{Last: true, Token: "floor-0"}}})
	if _, err := conn.Write(append([]byte(head), reset...)); err != nil {
		conn.Close()
		return
	}
	f.mu.Lock()
	w := f.writers[f.next%len(f.writers)]
	f.next++
	f.mu.Unlock()
	w.mu.Lock()
	w.conns[tenant] = append(w.conns[tenant], conn)
	w.mu.Unlock()
}

// subscribeTenant is the tenant of a request for
// /v1/tenants/{tenant}/subscribe.
func subscribeTenant(req *http.Request, err error) (string, bool) {
	if err != nil {
		return "", false
	}
	rest, ok := strings.CutPrefix(req.URL.Path, "/v1/tenants/")
	if !ok {
		return "", false
	}
	tenant, ok := strings.CutSuffix(rest, "/subscribe")
	return tenant, ok && tenant != ""
}

// Publish writes value as tenant's next transaction to every connection
// of the tenant.
func (f *TCPFloor) Publish(tenant, value string) {
	f.mu.Lock()
	f.rev++
	rev := f.rev
	f.mu.Unlock()
	token := "floor-" + strconv.FormatInt(rev, 10)
	b := cache.SSEEvent(&confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Events{Events: &confettipb.Events{Txns: []*confettipb.Txn{{
		Revision: rev, Token: token,
		Events: []*confettipb.Event{{Type: confettipb.Event_PUT, Kv: &confettipb.KeyValue{Key: tickKey, Value: []byte(value), ModRevision: rev, CreateRevision: 1, Version: rev}}},
	}}}}})
	for _, w := range f.writers {
		w.in <- floorMsg{tenant: tenant, b: b}
	}
}

func (w *floorWriter) run() {
	for m := range w.in {
		w.mu.Lock()
		conns := w.conns[m.tenant]
		live := conns[:0]
		for _, c := range conns {
			if _, err := c.Write(m.b); err != nil {
				c.Close()
				continue
			}
			live = append(live, c)
		}
		clear(conns[len(live):])
		w.conns[m.tenant] = live
		w.mu.Unlock()
	}
}

// Close closes the listener and every connection.
func (f *TCPFloor) Close() {
	f.ln.Close()
	for _, w := range f.writers {
		close(w.in)
	}
	f.wg.Wait()
	for _, w := range f.writers {
		for _, conns := range w.conns {
			for _, c := range conns {
				c.Close()
			}
		}
	}
}

// subscribeSSE is subscriber i as an HTTP client of the SSE door: one
// connection, the request written by hand, the events read as they come.
// In resume mode, when its stream on the first address ends, it resumes
// on the second with Last-Event-ID, retrying until the process ends.
func (c *child) subscribeSSE(i int) {
	s := &c.subs[i]
	_, addr := c.place(i)
	token := ""
	resuming := false
	for {
		err := c.sseStream(i, addr, &token, resuming)
		if err == nil || c.ctx.Err() != nil {
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

// errStreamEnded is an SSE stream the server closed.
var errStreamEnded = errors.New("bench: the event stream ended")

// sseStream runs one SSE subscription until the subscriber has everything
// (nil) or the stream ends.
func (c *child) sseStream(i int, addr string, token *string, resuming bool) error {
	s := &c.subs[i]
	conn, err := c.dial(c.ctx, addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(c.ctx, func() { conn.Close() })
	defer stop()
	req := fmt.Sprintf("GET /v1/tenants/%s/subscribe?%s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n",
		url.PathEscape(s.tenant.Name), url.Values{"prefix": c.prefixes(i)}.Encode(), addr)
	if *token != "" {
		req += "Last-Event-ID: " + *token + "\r\n"
	}
	if _, err := conn.Write([]byte(req + "\r\n")); err != nil {
		return err
	}
	br := bufio.NewReaderSize(conn, 8<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bench: subscribe %s: %s", addr, resp.Status)
	}
	h := &cacheSub{c: c, i: i, token: token, resuming: resuming}
	r := sse.NewReader(br)
	for {
		ev, err := r.Next()
		if err != nil {
			return errors.Join(errStreamEnded, err)
		}
		m, err := decodeSSE(ev)
		if err != nil {
			return err
		}
		if m != nil && h.handle(m) {
			return nil
		}
	}
}

// decodeSSE is an SSE door event as the subscription message it carries;
// nil for an event of another name.
func decodeSSE(ev sse.Event) (*confettipb.SubscribeResponse, error) {
	var m apijson.Message
	var dst any
	switch ev.Name {
	case "reset":
		m.Reset = &apijson.Reset{}
		dst = m.Reset
	case "events":
		m.Events = &apijson.Events{}
		dst = m.Events
	case "progress":
		m.Progress = &apijson.Progress{}
		dst = m.Progress
	default:
		return nil, nil
	}
	if err := json.Unmarshal(ev.Data, dst); err != nil {
		return nil, fmt.Errorf("bench: event %s: %w", ev.Name, err)
	}
	return m.Proto(), nil
}
