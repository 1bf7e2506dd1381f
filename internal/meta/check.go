package meta

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// CheckStep names the step of a cluster check that failed.
type CheckStep string

const (
	// CheckReach is a Status call to each endpoint through a client of its
	// own (which, with credentials, authenticates).
	CheckReach CheckStep = "reach"
	// CheckOneCluster is the endpoints being members of one cluster.
	CheckOneCluster CheckStep = "one-cluster"
	// CheckWrite is a write, a read back and a delete of a probe key.
	CheckWrite CheckStep = "write"
)

// ClusterCheckError is a failed cluster check: the step and what failed.
type ClusterCheckError struct {
	Step   CheckStep
	Reason string
}

func (e *ClusterCheckError) Error() string { return e.Reason }

// ProbePrefix holds the keys the cluster check writes and deletes again:
// under Confetti's own prefix (so Confetti's etcd permissions cover it)
// and outside keys.Root (so cache nodes never see them).
const ProbePrefix = "/confetti/probe/"

// CheckCluster checks that endpoints are one etcd cluster that clients
// made by dial (with the caller's credentials and TLS) can read and
// write: a Status call to every endpoint through a client of its own, all
// members of one cluster, then a write, a read back and a delete of a
// probe key under /confetti/probe/. Every step is bounded by timeout. It
// returns the cluster's id, or a *ClusterCheckError saying which step
// failed and why; whose names the credentials in the reasons ("the
// proxy's").
func CheckCluster(ctx context.Context, dial func(endpoints []string) (*clientv3.Client, error), whose string, endpoints []string, timeout time.Duration) (uint64, error) {
	clusters := make([]uint64, len(endpoints))
	errs := make([]error, len(endpoints))
	var wg sync.WaitGroup
	for i, ep := range endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			clusters[i], errs[i] = statusOf(ctx, dial, whose, ep, timeout)
		}()
	}
	wg.Wait()
	var failed []string
	for i, err := range errs {
		if err != nil {
			failed = append(failed, fmt.Sprintf("endpoint %s: %v", endpoints[i], err))
		}
	}
	if len(failed) > 0 {
		return 0, &ClusterCheckError{Step: CheckReach, Reason: strings.Join(failed, "; ")}
	}
	for i := range endpoints {
		if clusters[i] != clusters[0] {
			return 0, &ClusterCheckError{Step: CheckOneCluster, Reason: fmt.Sprintf("endpoints %s and %s belong to different etcd clusters (ids %x and %x)", endpoints[0], endpoints[i], clusters[0], clusters[i])}
		}
	}
	if err := probeWrite(ctx, dial, whose, endpoints, timeout); err != nil {
		return 0, &ClusterCheckError{Step: CheckWrite, Reason: err.Error()}
	}
	return clusters[0], nil
}

// statusOf asks one endpoint for its member status through a client of its
// own, and returns the id of the cluster it belongs to.
func statusOf(ctx context.Context, dial func([]string) (*clientv3.Client, error), whose, ep string, timeout time.Duration) (uint64, error) {
	cli, err := dial([]string{ep})
	if errors.Is(err, context.DeadlineExceeded) {
		// With credentials, connecting authenticates and waits for an
		// answer up to the dial timeout.
		return 0, fmt.Errorf("no etcd answered within the dial timeout: %v", err)
	}
	if err != nil {
		return 0, fmt.Errorf("cannot connect with %s etcd credentials: %v", whose, err)
	}
	defer cli.Close()
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := cli.Status(sctx, ep)
	if err != nil {
		return 0, fmt.Errorf("no etcd member answered a Status call within %s: %v", timeout, err)
	}
	return st.Header.GetClusterId(), nil
}

// probeWrite writes a random value under ProbePrefix through a client of
// all endpoints, reads it back and deletes it.
func probeWrite(ctx context.Context, dial func([]string) (*clientv3.Client, error), whose string, endpoints []string, timeout time.Duration) error {
	cli, err := dial(endpoints)
	if err != nil {
		return fmt.Errorf("cannot connect with %s etcd credentials: %v", whose, err)
	}
	defer cli.Close()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	key, value := ProbePrefix+hex.EncodeToString(b[:8]), hex.EncodeToString(b[8:])
	step := func(what string, op func(context.Context) error) error {
		sctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), timeout)
		defer cancel()
		if err := op(sctx); err != nil {
			return fmt.Errorf("cannot %s the probe key %s: %v", what, key, err)
		}
		return nil
	}
	if err := step("write", func(ctx context.Context) error {
		_, err := cli.Put(ctx, key, value)
		return err
	}); err != nil {
		return err
	}
	readErr := step("read back", func(ctx context.Context) error {
		resp, err := cli.Get(ctx, key)
		if err != nil {
			return err
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != value {
			return errors.New("it came back with another value: is this one etcd cluster?")
		}
		return nil
	})
	delErr := step("delete", func(ctx context.Context) error {
		_, err := cli.Delete(ctx, key)
		return err
	})
	return errors.Join(readErr, delErr)
}
