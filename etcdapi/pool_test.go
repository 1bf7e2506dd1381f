package etcdapi

import (
	"errors"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func TestPoolSpreadsCallsOverEveryConnection(t *testing.T) {
	p, err := DialPool(4, func() (*grpc.ClientConn, error) {
		return grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	seen := map[*grpc.ClientConn]int{}
	for range 12 {
		seen[p.pick()]++
	}
	if len(seen) != 4 {
		t.Fatalf("12 picks used %d of 4 connections", len(seen))
	}
	for c, n := range seen {
		if n != 3 {
			t.Fatalf("connection %p picked %d times, want 3", c, n)
		}
	}
}

func TestDialPoolClosesWhatItOpenedOnError(t *testing.T) {
	var opened []*grpc.ClientConn
	boom := errors.New("boom")
	_, err := DialPool(3, func() (*grpc.ClientConn, error) {
		if len(opened) == 2 {
			return nil, boom
		}
		c, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
		opened = append(opened, c)
		return c, err
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
	for _, c := range opened {
		if c.Invoke(t.Context(), "/x.Y/Z", nil, nil) == nil || c.GetState().String() != "SHUTDOWN" {
			t.Fatalf("connection left open: %s", c.GetState())
		}
	}
}
