package bench

import (
	"sync"

	"github.com/confetti-io/confetti/api/confettipb"
)

// Floor is the transport limit the fan-out is compared with: the Cache
// service's Subscribe with no store behind it. Every subscriber gets an
// empty Reset, then each published value as one Events message, sent from
// its own goroutine and bounded queue.
type Floor struct {
	confettipb.UnimplementedCacheServer

	mu   sync.Mutex
	subs map[chan *confettipb.SubscribeResponse]struct{}
	rev  int64
}

// NewFloor returns a Floor with no subscribers.
func NewFloor() *Floor {
	return &Floor{subs: map[chan *confettipb.SubscribeResponse]struct{}{}}
}

// Subscribe serves one subscriber until it goes away.
func (f *Floor) Subscribe(stream confettipb.Cache_SubscribeServer) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	ch := make(chan *confettipb.SubscribeResponse, 128)
	f.mu.Lock()
	f.subs[ch] = struct{}{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.subs, ch)
		f.mu.Unlock()
	}()
	if err := stream.Send(&confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Reset_{Reset_: &confettipb.Reset{Last: true, Token: "floor"}}}); err != nil {
		return err
	}
	for {
		select {
		case m := <-ch:
			if err := stream.Send(m); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

// Publish queues value, as the key kv/tick, to every subscriber; a
// subscriber whose queue is full misses it.
func (f *Floor) Publish(value string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev++
	m := &confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Events{Events: &confettipb.Events{
		Txns:  []*confettipb.Txn{{Revision: f.rev, Events: []*confettipb.Event{{Type: confettipb.Event_PUT, Kv: &confettipb.KeyValue{Key: "kv/tick", Value: []byte(value), ModRevision: f.rev}}}}},
		Token: "floor",
	}}}
	for ch := range f.subs {
		select {
		case ch <- m:
		default:
		}
	}
}
