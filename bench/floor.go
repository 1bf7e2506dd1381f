package bench

import (
	"sync"

	"github.com/confetti-io/confetti/api/confettipb"
)

// Floor is the transport limit the fan-out is compared with: the Cache
// service's Subscribe with no store behind it. Every subscriber gets an
// empty Reset, then each value published to its tenant as one Events
// message, sent from its own goroutine and bounded queue.
type Floor struct {
	confettipb.UnimplementedCacheServer

	mu   sync.Mutex
	subs map[string]map[chan *confettipb.SubscribeResponse]struct{}
	rev  int64
}

// NewFloor returns a Floor with no subscribers.
func NewFloor() *Floor {
	return &Floor{subs: map[string]map[chan *confettipb.SubscribeResponse]struct{}{}}
}

// Subscribe serves one subscriber until it goes away.
func (f *Floor) Subscribe(stream confettipb.Cache_SubscribeServer) error {
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	tenant := req.GetStart().GetTenant()
	ch := make(chan *confettipb.SubscribeResponse, 128)
	f.mu.Lock()
	if f.subs[tenant] == nil {
		f.subs[tenant] = map[chan *confettipb.SubscribeResponse]struct{}{}
	}
	f.subs[tenant][ch] = struct{}{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.subs[tenant], ch)
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

// Publish queues value, as the key kv/tick, to every subscriber of
// tenant; a subscriber whose queue is full misses it.
func (f *Floor) Publish(tenant, value string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev++
	m := &confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Events{Events: &confettipb.Events{
		Txns:  []*confettipb.Txn{{Revision: f.rev, Events: []*confettipb.Event{{Type: confettipb.Event_PUT, Kv: &confettipb.KeyValue{Key: tickKey, Value: []byte(value), ModRevision: f.rev}}}}},
		Token: "floor",
	}}}
	for ch := range f.subs[tenant] {
		select {
		case ch <- m:
		default:
		}
	}
}
