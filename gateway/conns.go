package gateway

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// conns is a client's own connections, one per cache node, kept for the
// client's life so that gRPC redials a lost node by itself and the client
// can see when one is back.
type conns struct {
	mu     sync.Mutex
	byEP   map[string]*grpc.ClientConn
	closed bool
}

func newConns() *conns {
	return &conns{byEP: map[string]*grpc.ClientConn{}}
}

// get returns ep's connection, made by dial on first use.
func (c *conns) get(ep string, dial func() (*grpc.ClientConn, error)) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc := c.byEP[ep]; cc != nil {
		return cc, nil
	}
	if c.closed {
		return nil, ErrClosed
	}
	cc, err := dial()
	if err != nil {
		return nil, err
	}
	c.byEP[ep] = cc
	return cc, nil
}

// unreachable reports whether the client's connection to ep failed to
// connect (as opposed to the node answering, or ep using Config.Dial).
func (c *conns) unreachable(ep string) bool {
	c.mu.Lock()
	cc := c.byEP[ep]
	c.mu.Unlock()
	if cc == nil {
		return false
	}
	s := cc.GetState()
	return s == connectivity.TransientFailure || s == connectivity.Connecting
}

// anyReady returns a channel that receives the index in eps of the
// first endpoint whose connection is ready, until ctx ends. Connections
// that are idle start connecting.
func (c *conns) anyReady(ctx context.Context, eps []string) <-chan int {
	c.mu.Lock()
	var watched []*grpc.ClientConn
	var idx []int
	for i, ep := range eps {
		if cc := c.byEP[ep]; cc != nil {
			watched, idx = append(watched, cc), append(idx, i)
		}
	}
	c.mu.Unlock()
	if len(watched) == 0 {
		return nil
	}
	out := make(chan int, 1)
	for k, cc := range watched {
		go func() {
			for {
				s := cc.GetState()
				if s == connectivity.Ready {
					select {
					case out <- idx[k]:
					default:
					}
					return
				}
				if s == connectivity.Idle {
					cc.Connect()
				}
				if !cc.WaitForStateChange(ctx, s) {
					return
				}
			}
		}()
	}
	return out
}

// close closes every connection.
func (c *conns) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for ep, cc := range c.byEP {
		cc.Close()
		delete(c.byEP, ep)
	}
}
