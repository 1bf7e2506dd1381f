package testcluster

import (
	"net"
	"sync"
	"testing"
)

// Freezer forwards TCP connections to a target and can stop passing bytes
// without closing anything: the silent network of a frozen process or a
// cut link, which only timeouts notice.
type Freezer struct {
	lis    net.Listener
	target string

	mu     sync.Mutex
	frozen bool
	thaw   chan struct{}
}

// NewFreezer forwards a loopback port to target until the test ends.
func NewFreezer(t testing.TB, target string) *Freezer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &Freezer{lis: lis, target: target, thaw: make(chan struct{})}
	close(f.thaw)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go f.forward(c)
		}
	}()
	t.Cleanup(func() { lis.Close() })
	return f
}

func (f *Freezer) forward(c net.Conn) {
	u, err := net.Dial("tcp", f.target)
	if err != nil {
		c.Close()
		return
	}
	pipe := func(dst, src net.Conn) {
		defer dst.Close()
		defer src.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			f.mu.Lock()
			thaw := f.thaw
			f.mu.Unlock()
			<-thaw
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	go pipe(u, c)
	go pipe(c, u)
}

// Freeze stops passing bytes; connections stay open.
func (f *Freezer) Freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.frozen {
		f.frozen, f.thaw = true, make(chan struct{})
	}
}

// Unfreeze passes bytes again, those held included.
func (f *Freezer) Unfreeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.frozen {
		f.frozen = false
		close(f.thaw)
	}
}

// Addr is the forwarded port's host:port.
func (f *Freezer) Addr() string { return f.lis.Addr().String() }
