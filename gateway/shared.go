package gateway

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/confetti-io/confetti/api/confettipb"
)

// Streams lets the clients of one process share their connections and
// streams to the cache nodes: every Client whose Config.Streams is the
// same Streams holds its subscription over one Cache.SubscribeMany stream
// per cache node and API key, as etcd's watchers share a Watch stream. A
// gateway with many resource types or workers then costs a node one
// connection and one stream, and subscriptions of one tenant and view on
// the stream get each update as one message.
//
// Each client keeps its own view, token, snapshot and failover: when a
// shared stream breaks, every subscription on it fails over on its own,
// resuming from its own token. Clients that share Streams must use the
// same endpoints and TLS settings; the first client to reach a node
// dials it. Close the Streams after its clients.
type Streams struct {
	conns *conns

	mu      sync.Mutex
	streams map[streamKey]*manyStream
	nextID  int64
}

type streamKey struct {
	endpoint string
	apiKey   string
}

// NewStreams returns a Streams with no connection yet.
func NewStreams() *Streams {
	return &Streams{conns: newConns(), streams: map[streamKey]*manyStream{}}
}

// Close closes the connections; the subscriptions still open on them end
// and their clients keep retrying until they are closed.
func (s *Streams) Close() {
	s.mu.Lock()
	for _, ms := range s.streams {
		ms.cancel()
	}
	s.mu.Unlock()
	s.conns.close()
}

// open opens a subscription on the shared stream to endpoint over cc,
// starting the stream when there is none (or the last one ended).
func (s *Streams) open(cc grpc.ClientConnInterface, endpoint, apiKey string, maxMsg int) (*sharedSub, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := streamKey{endpoint: endpoint, apiKey: apiKey}
	ms := s.streams[k]
	if ms == nil || ms.ended() {
		ctx, cancel := context.WithCancel(context.Background())
		if apiKey != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, apiKeyMetadata, apiKey)
		}
		st, err := confettipb.NewCacheClient(cc).SubscribeMany(ctx, grpc.MaxCallRecvMsgSize(maxMsg))
		if err != nil {
			cancel()
			return nil, err
		}
		ms = &manyStream{stream: st, cancel: cancel, subs: map[int64]*sharedSub{}, done: make(chan struct{})}
		s.streams[k] = ms
		go ms.receive()
	}
	s.nextID++
	sub := &sharedSub{ms: ms, id: s.nextID, wake: make(chan struct{}, 1)}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.err != nil {
		return nil, ms.err
	}
	ms.subs[sub.id] = sub
	return sub, nil
}

// manyStream is one shared SubscribeMany stream.
type manyStream struct {
	stream confettipb.Cache_SubscribeManyClient
	cancel context.CancelFunc
	sendMu sync.Mutex

	mu   sync.Mutex
	subs map[int64]*sharedSub
	err  error
	done chan struct{}
}

func (ms *manyStream) ended() bool {
	select {
	case <-ms.done:
		return true
	default:
		return false
	}
}

// receive hands each response to the subscriptions it names until the
// stream ends, which ends them all with its error.
func (ms *manyStream) receive() {
	for {
		m, err := ms.stream.Recv()
		if err != nil {
			ms.mu.Lock()
			ms.err = err
			subs := ms.subs
			ms.subs = nil
			close(ms.done)
			ms.mu.Unlock()
			for _, sub := range subs {
				sub.end(err)
			}
			ms.cancel()
			return
		}
		ms.mu.Lock()
		for _, id := range m.GetSubscriptionIds() {
			sub := ms.subs[id]
			if sub == nil {
				continue
			}
			if c := m.GetClosed(); c != nil {
				delete(ms.subs, id)
				sub.end(status.Error(codes.Code(c.GetCode()), c.GetMessage()))
				continue
			}
			sub.push(m)
		}
		ms.mu.Unlock()
	}
}

func (ms *manyStream) send(req *confettipb.SubscribeRequest) error {
	ms.sendMu.Lock()
	defer ms.sendMu.Unlock()
	return ms.stream.Send(req)
}

// sharedSub is one client's subscription on a shared stream. What the
// stream receives for it waits in an unbounded queue, so that a client
// that applies slowly never delays the others on the stream; the node
// bounds what it sends to the stream.
type sharedSub struct {
	ms   *manyStream
	id   int64
	wake chan struct{}

	mu  sync.Mutex
	q   []*confettipb.SubscribeResponse
	err error
}

func (s *sharedSub) push(m *confettipb.SubscribeResponse) {
	s.mu.Lock()
	s.q = append(s.q, m)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *sharedSub) end(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Send sends a request of this subscription.
func (s *sharedSub) Send(req *confettipb.SubscribeRequest) error {
	req.SubscriptionId = s.id
	return s.ms.send(req)
}

// recv returns the subscription's next response, or why it ended.
func (s *sharedSub) recv(ctx context.Context) (*confettipb.SubscribeResponse, error) {
	for {
		s.mu.Lock()
		if len(s.q) > 0 {
			m := s.q[0]
			s.q[0] = nil
			s.q = s.q[1:]
			s.mu.Unlock()
			return m, nil
		}
		err := s.err
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		select {
		case <-s.wake:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// close cancels the subscription on its stream, which goes on for the
// others.
func (s *sharedSub) close() {
	s.ms.mu.Lock()
	_, open := s.ms.subs[s.id]
	delete(s.ms.subs, s.id)
	s.ms.mu.Unlock()
	if open {
		s.Send(&confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Cancel{Cancel: &confettipb.Cancel{}}}) //nolint:errcheck // the stream's failure ends every subscription on it
	}
}

// Header is the shared stream's response header.
func (s *sharedSub) Header() (metadata.MD, error) { return s.ms.stream.Header() }
