package cache

import (
	"net"
	"sync"
	"syscall"
	"time"
)

// The writer pool sends to the node's SSE connections: a few goroutines
// (one per CPU) write the frames queued to whichever connections have
// some, so that a connection costs no goroutine, timer or allocation per
// message. A write never waits: it goes to the socket without blocking,
// and a connection whose socket buffer is full (a client that reads
// slowly) leaves the pool for a goroutine of its own until it has caught
// up; its queue meanwhile fills, and its subscription is marked lagging
// and catches up alone, as on gRPC.

// ssePool is the node's writer pool.
type ssePool struct {
	c         *Cache
	ready     chan *sink
	wg        sync.WaitGroup
	closeOnce sync.Once
}

func newSSEPool(c *Cache, workers int) *ssePool {
	p := &ssePool{c: c, ready: make(chan *sink, 1<<14)}
	for range workers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for k := range p.ready {
				p.drain(k)
			}
		}()
	}
	return p
}

// schedule hands a sink with queued frames to a writer.
func (p *ssePool) schedule(k *sink) { p.ready <- k }

// close stops the writers once every scheduled sink is written.
func (p *ssePool) close() {
	p.closeOnce.Do(func() {
		close(p.ready)
		p.wg.Wait()
	})
}

// drain writes a sink's queue until it is empty, then releases the sink;
// a write that cannot finish at once hands the sink to a goroutine of its
// own.
func (p *ssePool) drain(k *sink) {
	for {
		batch := k.take()
		if len(batch) == 0 {
			if k.release(batch) {
				return
			}
			continue
		}
		rest, err := k.sse.tryWrite(batch)
		switch {
		case err != nil:
			// The connection is gone; the sink stays scheduled, so
			// nothing is handed to a writer again.
			k.sse.fail(err)
			return
		case len(rest) > 0:
			p.wg.Add(1)
			go p.slow(k, batch, rest)
			return
		}
		k.sent(batch, p.c)
	}
}

// slow finishes a write to a connection whose socket buffer was full and
// writes its queue, waiting for the client, until the queue is empty;
// then the sink returns to the pool.
func (p *ssePool) slow(k *sink, batch []frame, rest []byte) {
	defer p.wg.Done()
	for {
		if err := k.sse.writeAll(rest); err != nil {
			k.sse.fail(err)
			return
		}
		k.sent(batch, p.c)
		if batch = k.take(); len(batch) == 0 {
			if k.release(batch) {
				return
			}
			continue
		}
		rest = k.sse.join(batch)
	}
}

// sseConn is an SSE connection taken over from HTTP/1.1.
type sseConn struct {
	conn net.Conn
	raw  syscall.RawConn
	pool *ssePool
	// cancel ends the connection's subscription.
	cancel func()
	// buf joins the frames of a batch of more than one.
	buf []byte

	failOnce sync.Once
}

func newSSEConn(conn net.Conn, raw syscall.RawConn, pool *ssePool, cancel func()) *sseConn {
	return &sseConn{conn: conn, raw: raw, pool: pool, cancel: cancel}
}

// join is a batch's bytes: the one frame's shared encoding, or the frames
// copied into the connection's buffer.
func (s *sseConn) join(batch []frame) []byte {
	if len(batch) == 1 {
		return batch[0].msg.sseBytes()
	}
	s.buf = s.buf[:0]
	for _, f := range batch {
		s.buf = append(s.buf, f.msg.sseBytes()...)
	}
	return s.buf
}

// tryWrite writes a batch in one system call without waiting, and returns
// what did not fit.
func (s *sseConn) tryWrite(batch []frame) ([]byte, error) {
	b := s.join(batch)
	for len(b) > 0 {
		var n int
		var werr error
		if err := s.raw.Write(func(fd uintptr) bool {
			n, werr = syscall.Write(int(fd), b)
			return true
		}); err != nil {
			return nil, err
		}
		switch {
		case werr == syscall.EINTR:
			continue
		case werr == syscall.EAGAIN:
			return b, nil
		case werr != nil:
			return nil, werr
		}
		b = b[n:]
	}
	return nil, nil
}

// writeAll writes b, waiting for the client up to the node's
// SSEWriteTimeout.
func (s *sseConn) writeAll(b []byte) error {
	if err := s.conn.SetWriteDeadline(time.Now().Add(s.pool.c.cfg.SSEWriteTimeout)); err != nil {
		return err
	}
	_, err := s.conn.Write(b)
	return err
}

// fail ends the connection and its subscription.
func (s *sseConn) fail(error) {
	s.failOnce.Do(func() {
		s.conn.Close()
		s.cancel()
	})
}
