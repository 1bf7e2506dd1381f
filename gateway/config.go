package gateway

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/confetti-io/confetti/api/confettipb"
)

// Identity names the gateway instance for release resolution (which gray
// version of an item it receives) and rollout status.
type Identity struct {
	// InstanceID is unique per gateway instance and stable across its
	// restarts (percentage grays hash it).
	InstanceID string `yaml:"instance-id"`
	// Labels are matched by label-selector grays (zone=a, tier=edge).
	Labels map[string]string `yaml:"labels"`
}

// Config configures a Client. Zero values mean the documented defaults.
type Config struct {
	// Endpoints are the cache nodes' gRPC addresses (host:port). The
	// client starts on a random one and moves to the next on failure.
	// Required.
	Endpoints []string `yaml:"endpoints"`
	// Tenant is the tenant subscribed to. Required.
	Tenant string `yaml:"tenant"`
	// Prefixes are prefixes of the tenant's plain keys to receive, named
	// as written ("/routes/" receives /routes/1; "" every plain key).
	// When Prefixes, Items and Services are all empty the client receives
	// every plain key, item and service of the tenant.
	Prefixes []string `yaml:"prefixes"`
	// Items are the config items to receive by name, "*" for every item.
	Items []string `yaml:"items"`
	// Services are the services whose instances to receive by name, "*"
	// for every service.
	Services []string `yaml:"services"`
	// Identity is sent with the subscription.
	Identity Identity `yaml:"identity"`
	// APIKey is sent as the x-api-key metadata; the reader role of the
	// tenant is enough.
	APIKey string `yaml:"api-key"`
	// SnapshotDir keeps the view on disk so that a restart serves it at
	// once, even with every cache node down; empty means no snapshot.
	SnapshotDir string `yaml:"snapshot-dir"`
	// SnapshotInterval is the shortest time between two snapshot writes:
	// changes in between are coalesced into the next write. Zero means
	// 200 ms.
	SnapshotInterval time.Duration `yaml:"snapshot-interval"`
	// BackoffInitial is the reconnect window after a working stream
	// breaks: the client waits a uniformly random time in [0,
	// BackoffInitial) before its first reconnect, so that a fleet that
	// lost the same cache node spreads its reconnects over the window.
	// Each further failed attempt doubles the window up to BackoffMax
	// (exponential backoff with full jitter). Zero means 1 second.
	BackoffInitial time.Duration `yaml:"backoff-initial"`
	// BackoffMax caps the reconnect window. Zero means 30 seconds.
	BackoffMax time.Duration `yaml:"backoff-max"`
	// ChangeBuffer is the capacity of the Changes channel. Zero means 64.
	ChangeBuffer int `yaml:"change-buffer"`
	// MaxMessageBytes bounds one received message. Zero means 64 MiB.
	MaxMessageBytes int `yaml:"max-message-bytes"`
	// TLS, if set, dials the cache nodes with TLS; nil means plaintext.
	TLS *tls.Config `yaml:"-"`
	// DialOptions are added to the client's own dial options.
	DialOptions []grpc.DialOption `yaml:"-"`
	// Dial, if set, returns the connection to use for an endpoint instead
	// of the client dialing one; the client never closes a connection Dial
	// returned, so several clients may share one.
	Dial func(endpoint string) (grpc.ClientConnInterface, error) `yaml:"-"`
	// Streams, if set, carries the subscription over a SubscribeMany
	// stream shared with the other clients of the same Streams (see
	// NewStreams); nil gives the client a Subscribe stream of its own.
	Streams *Streams `yaml:"-"`
	// Validate, if set, checks every PUT before it enters the view. An
	// error refuses the value: the key keeps the value it had (or stays
	// absent), and a key carrying a config item version is NACKed with the
	// error's text; a nil error ACKs it. It runs on the goroutine that
	// applies messages and must not block.
	Validate func(key string, kv *confettipb.KeyValue) error `yaml:"-"`
	// Logger receives the client's logs; nil means none.
	Logger *zap.Logger `yaml:"-"`
	// Observer, if set, is told of every stream start and every message
	// received, in order, before the message is applied: for tracing, and
	// for checking the subscription contract (internal/watchcheck's Stream
	// is one). Its methods run on the goroutine that applies messages and
	// must not block.
	Observer Observer `yaml:"-"`
}

// Observer sees a client's subscription streams.
type Observer interface {
	// Subscribed is called when a stream starts, with the token it
	// resumes from ("" for none).
	Subscribed(token string)
	// Received is called with every message of the stream.
	Received(*confettipb.SubscribeResponse)
}

func (c *Config) setDefaults() error {
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = 200 * time.Millisecond
	}
	if c.BackoffInitial == 0 {
		c.BackoffInitial = time.Second
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = 30 * time.Second
	}
	if c.ChangeBuffer == 0 {
		c.ChangeBuffer = 64
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 64 << 20
	}
	var errs []error
	if len(c.Endpoints) == 0 {
		errs = append(errs, errors.New("no cache node endpoints: set Endpoints (--cache-endpoints) to the cache nodes' gRPC addresses"))
	}
	for _, ep := range c.Endpoints {
		if ep == "" {
			errs = append(errs, errors.New("an endpoint is empty: give host:port addresses"))
		}
	}
	if c.Tenant == "" {
		errs = append(errs, errors.New("no tenant: set Tenant (--tenant)"))
	}
	if c.SnapshotInterval < 0 || c.BackoffInitial < 0 || c.BackoffMax < 0 || c.ChangeBuffer < 0 || c.MaxMessageBytes < 0 {
		errs = append(errs, errors.New("durations and sizes must not be negative"))
	}
	if c.BackoffMax < c.BackoffInitial {
		errs = append(errs, fmt.Errorf("backoff max %s is below backoff initial %s", c.BackoffMax, c.BackoffInitial))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	return nil
}
