package chaos

import (
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// Link is the network path from one part to another: a TCP proxy on
// loopback that the client part dials instead of the server. It passes
// bytes, or holds them (a blackhole: connections stay open and silent, as
// across a partition), delays each chunk (latency with jitter), or delays
// a fraction of chunks by a retransmission timeout (packet loss as TCP
// shows it to the application). Heal restores the path; connections that
// lived through a fault carry on.
type Link struct {
	Name   string
	Addr   string // where the client dials
	target string
	lis    net.Listener

	mu     sync.Mutex
	state  linkState
	change chan struct{} // closed and replaced on every state change
	conns  map[net.Conn]struct{}
	rng    *rand.Rand
}

type linkState struct {
	blackhole bool
	delay     time.Duration
	jitter    time.Duration
	loss      float64 // fraction of chunks delayed by lossDelay
}

// lossDelay is what a lost segment costs a TCP connection: the sender's
// retransmission timeout, at least 200 ms on Linux.
const lossDelay = 200 * time.Millisecond

func newLink(name, target string, seed uint64) (*Link, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &Link{Name: name, Addr: lis.Addr().String(), target: target, lis: lis,
		change: make(chan struct{}), conns: map[net.Conn]struct{}{}, rng: rand.New(rand.NewPCG(seed, 0x11))}
	go l.accept()
	return l, nil
}

func (l *Link) accept() {
	for {
		c, err := l.lis.Accept()
		if err != nil {
			return
		}
		go l.serve(c)
	}
}

func (l *Link) serve(c net.Conn) {
	s, err := net.DialTimeout("tcp", l.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	l.mu.Lock()
	l.conns[c], l.conns[s] = struct{}{}, struct{}{}
	l.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.pipe(s, c) }()
	go func() { defer wg.Done(); l.pipe(c, s) }()
	wg.Wait()
	l.mu.Lock()
	delete(l.conns, c)
	delete(l.conns, s)
	l.mu.Unlock()
}

// pipe copies src to dst chunk by chunk, applying the link's state to
// each chunk before it is written.
func (l *Link) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if d := l.hold(); d > 0 {
				time.Sleep(d)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// hold waits out a blackhole and returns the delay of the next chunk.
func (l *Link) hold() time.Duration {
	for {
		l.mu.Lock()
		st, ch := l.state, l.change
		if !st.blackhole {
			d := st.delay
			if st.jitter > 0 {
				d += time.Duration(l.rng.Int64N(int64(st.jitter)))
			}
			if st.loss > 0 && l.rng.Float64() < st.loss {
				d += lossDelay
			}
			l.mu.Unlock()
			return d
		}
		l.mu.Unlock()
		<-ch
	}
}

func (l *Link) set(f func(*linkState)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(&l.state)
	close(l.change)
	l.change = make(chan struct{})
}

// Blackhole stops passing bytes, leaving connections open.
func (l *Link) Blackhole() { l.set(func(s *linkState) { s.blackhole = true }) }

// Delay adds d plus up to jitter to every chunk.
func (l *Link) Delay(d, jitter time.Duration) {
	l.set(func(s *linkState) { s.delay, s.jitter = d, jitter })
}

// Loss delays a fraction of chunks as a lost segment would.
func (l *Link) Loss(fraction float64) { l.set(func(s *linkState) { s.loss = fraction }) }

// Heal passes bytes as they come again.
func (l *Link) Heal() { l.set(func(s *linkState) { *s = linkState{} }) }

// Reset closes every connection through the link, as a network that drops
// them would (the parts see a reset and reconnect).
func (l *Link) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		c.Close()
	}
}

// Close stops the link and closes its connections.
func (l *Link) Close() {
	l.lis.Close()
	l.Heal()
	l.Reset()
}
