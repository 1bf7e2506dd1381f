package chaos

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/watchcheck"
)

// reader is a subscriber on a raw Subscribe stream that the StopReading
// fault can stop reading: its stream's flow-control window fills, the
// cache node's queue for it fills, and the node must mark it lagging and
// catch it up alone once it reads again, with nothing lost. It resumes
// from its last token when the stream breaks.
type reader struct {
	start  *confettipb.Start
	stream *watchcheck.Stream
	key    string

	mu     sync.Mutex
	paused bool
	resume chan struct{} // closed when reading starts again
}

// run reads until ctx ends, switching endpoints when a stream breaks.
func (rd *reader) run(ctx context.Context, endpoints []string) {
	ctx = metadata.AppendToOutgoingContext(ctx, "x-api-key", rd.key)
	for n := 0; ctx.Err() == nil; n++ {
		cc, err := grpc.NewClient(endpoints[n%len(endpoints)], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err == nil {
			rd.session(ctx, cc)
			cc.Close()
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
}

func (rd *reader) session(ctx context.Context, cc *grpc.ClientConn) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := confettipb.NewCacheClient(cc).Subscribe(sctx)
	if err != nil {
		return
	}
	start := proto.CloneOf(rd.start)
	start.Token = rd.stream.LastToken()
	rd.stream.Subscribed(start.Token)
	if err := st.Send(&confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Start{Start: start}}); err != nil {
		return
	}
	for {
		rd.waitReading(ctx)
		m, err := st.Recv()
		if err != nil {
			return
		}
		rd.stream.Received(m)
	}
}

func (rd *reader) waitReading(ctx context.Context) {
	rd.mu.Lock()
	paused, ch := rd.paused, rd.resume
	rd.mu.Unlock()
	if paused {
		select {
		case <-ch:
		case <-ctx.Done():
		}
	}
}

func (rd *reader) pause(p bool) {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if p == rd.paused {
		return
	}
	rd.paused = p
	if p {
		rd.resume = make(chan struct{})
	} else {
		close(rd.resume)
	}
}

// StopReading makes every raw subscriber of the run stop reading its
// stream until heal.
type StopReading struct{}

func (StopReading) Name() string     { return "subscribers stop reading" }
func (StopReading) Shards() []string { return nil }
func (StopReading) Inject(_ context.Context, t *Topology) error {
	for _, rd := range t.readers {
		rd.pause(true)
	}
	return nil
}
func (StopReading) Heal(_ context.Context, t *Topology) error {
	for _, rd := range t.readers {
		rd.pause(false)
	}
	return nil
}
