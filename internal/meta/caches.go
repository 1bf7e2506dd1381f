package meta

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/confetti-io/confetti/internal/keys"
)

const cachesPrefix = Prefix + "caches/"

// cacheNodeTTL is how long a cache node stays registered after its process
// stops renewing the record.
const cacheNodeTTL = 10

// CacheNode is a cache node that is up: the proxy asks every registered
// node for the rollout state of the gateways subscribed to it.
type CacheNode struct {
	Name string `json:"name"`
	// Addr is the node's gRPC address as clients reach it.
	Addr string `json:"addr"`
	// EtcdAddr is the address of the node's etcd front door, if it
	// serves one: etcd clients sync their endpoints from the list.
	EtcdAddr string `json:"etcd_addr,omitempty"`
	// StartTime is when the node registered, Unix seconds.
	StartTime int64 `json:"start_time"`
}

// Caches returns the registered cache nodes sorted by name.
func (s *Store) Caches() []CacheNode {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]CacheNode, 0, len(s.caches))
	for _, c := range s.caches {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b CacheNode) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// RegisterCache keeps node registered, under a lease of ten seconds kept
// alive, until ctx ends or the store closes; then the record is revoked. It returns once the
// first registration is written, and re-registers in the background when
// the lease is lost (meta down longer than the TTL).
func (s *Store) RegisterCache(ctx context.Context, node CacheNode) error {
	if err := keys.ValidSvcName("cache node", node.Name); err != nil {
		return err
	}
	if node.Addr == "" {
		return fmt.Errorf("%w: cache node %q needs an address", ErrInvalid, node.Name)
	}
	// The registration ends with ctx or with the store.
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	node.StartTime = time.Now().Unix()
	b, err := json.Marshal(node)
	if err != nil {
		return err
	}
	register := func() (clientv3.LeaseID, <-chan *clientv3.LeaseKeepAliveResponse, error) {
		rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		defer cancel()
		lease, err := s.cli.Grant(rctx, cacheNodeTTL)
		if err != nil {
			return 0, nil, fmt.Errorf("%w: register cache node %q: %w", ErrUnavailable, node.Name, err)
		}
		if _, err := s.cli.Put(rctx, cachesPrefix+node.Name, string(b), clientv3.WithLease(lease.ID)); err != nil {
			return 0, nil, fmt.Errorf("%w: register cache node %q: %w", ErrUnavailable, node.Name, err)
		}
		ka, err := s.cli.KeepAlive(ctx, lease.ID)
		if err != nil {
			return 0, nil, fmt.Errorf("%w: register cache node %q: %w", ErrUnavailable, node.Name, err)
		}
		return lease.ID, ka, nil
	}
	lease, ka, err := register()
	if err != nil {
		stop()
		cancel()
		return err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer stop()
		defer cancel()
		for {
			for range ka {
			}
			if ctx.Err() != nil {
				rctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
				s.cli.Revoke(rctx, lease)
				cancel()
				return
			}
			for {
				var err error
				if lease, ka, err = register(); err == nil {
					break
				}
				s.lg.Warn("cache node registration failed", zap.String("node", node.Name), zap.Error(err))
				select {
				case <-time.After(time.Second):
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return nil
}
