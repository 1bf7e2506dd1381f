package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"

	pb "github.com/confetti-io/confetti/api/confettipb"
)

// scriptedCache is a cache node whose Subscribe records the Start it gets
// and sends a fixed script, then ends the stream (or holds it open).
type scriptedCache struct {
	pb.UnimplementedCacheServer
	script []*pb.SubscribeResponse
	hold   bool

	mu     sync.Mutex
	starts []*pb.Start
}

func (s *scriptedCache) Subscribe(stream pb.Cache_SubscribeServer) error {
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.starts = append(s.starts, req.GetStart())
	s.mu.Unlock()
	for _, m := range s.script {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	if s.hold {
		<-stream.Context().Done()
	}
	return nil
}

func (s *scriptedCache) received() []*pb.Start {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*pb.Start(nil), s.starts...)
}

func startCache(t *testing.T, c *scriptedCache) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	pb.RegisterCacheServer(s, c)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func kv(key, value string, rev int64) *pb.KeyValue {
	return &pb.KeyValue{Key: key, Value: []byte(value), ModRevision: rev}
}

func resetMsg(chunk int32, last bool, token string, kvs ...*pb.KeyValue) *pb.SubscribeResponse {
	return &pb.SubscribeResponse{Response: &pb.SubscribeResponse_Reset_{Reset_: &pb.Reset{Chunk: chunk, Last: last, Token: token, Kvs: kvs}}}
}

func eventsMsg(txns ...*pb.Txn) *pb.SubscribeResponse {
	return &pb.SubscribeResponse{Response: &pb.SubscribeResponse_Events{Events: &pb.Events{Txns: txns}}}
}

func progressMsg(token string) *pb.SubscribeResponse {
	return &pb.SubscribeResponse{Response: &pb.SubscribeResponse_Progress{Progress: &pb.Progress{Token: token}}}
}

// put is a transaction putting key, whose token is "t<rev>".
func put(rev int64, key, value string) *pb.Txn {
	return &pb.Txn{Revision: rev, Token: fmt.Sprint("t", rev), Events: []*pb.Event{{Type: pb.Event_PUT, Kv: kv(key, value, rev)}}}
}

// del is a transaction deleting key, whose token is "t<rev>".
func del(rev int64, key string) *pb.Txn {
	return &pb.Txn{Revision: rev, Token: fmt.Sprint("t", rev), Events: []*pb.Event{{Type: pb.Event_DELETE, Kv: &pb.KeyValue{Key: key, ModRevision: rev}}}}
}

// runCLI runs one command line in process with an empty environment and
// no client config file.
func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	return runCLIWith(t, filepath.Join(t.TempDir(), "none.yaml"), args...)
}

// runCLIWith runs one command line in process with an empty environment
// and the given client config file.
func runCLIWith(t *testing.T, clientConfig string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	a := newApp(&out, &errOut)
	a.lookupEnv = func(string) (string, bool) { return "", false }
	root := newRootCommand(a)
	root.SetArgs(append(args, "--client-config", clientConfig))
	root.SetOut(&out)
	root.SetErr(&errOut)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

func TestWatchPrintsResetAndEventsAndResumesOnTheNextNode(t *testing.T) {
	first := &scriptedCache{script: []*pb.SubscribeResponse{
		resetMsg(0, false, "", kv("/routes/a", "A", 3)),
		resetMsg(1, true, "t4", kv("/routes/b", "B", 4)),
		eventsMsg(put(5, "/routes/c", `{"uri":"/c"}`)),
		progressMsg("t5b"),
	}}
	second := &scriptedCache{hold: true, script: []*pb.SubscribeResponse{
		eventsMsg(del(6, "/routes/a"), put(7, "/routes/d", "D")),
	}}
	eps := startCache(t, first) + "," + startCache(t, second)

	out, errOut, err := runCLI(t, "kv", "watch", "--tenant", "acme", "/routes/", "--count", "4", "--cache-endpoints", eps)
	if err != nil {
		t.Fatalf("watch: %v (stderr %q)", err, errOut)
	}
	want := strings.Join([]string{
		"/routes/a A rev=3",
		"/routes/b B rev=4 token=t4",
		`PUT /routes/c {"uri":"/c"} rev=5 token=t5`,
		"DELETE /routes/a rev=6 token=t6",
	}, "\n") + "\n"
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
	if !strings.Contains(errOut, "resuming from the last token") {
		t.Errorf("stderr %q does not report the failover", errOut)
	}
	got := first.received()
	if len(got) != 1 || got[0].Tenant != "acme" || got[0].Token != "" || !cmp.Equal(got[0].Prefixes, []string{"/routes/"}) {
		t.Fatalf("first node got starts %v, want one for acme, prefix /routes/, no token", got)
	}
	got = second.received()
	if len(got) != 1 || got[0].Token != "t5b" {
		t.Fatalf("second node got starts %v, want one resuming from the progress token t5b", got)
	}
}

// Every printed token resumes exactly after its line: a watch that stops
// after the first of two transactions delivered in one message prints
// that transaction's token, and a watch from it is sent from there. Only
// the last line of a transaction carries a token, and a watch never stops
// inside a transaction.
func TestWatchPrintsTokensThatResumeAfterTheirLine(t *testing.T) {
	node := &scriptedCache{hold: true, script: []*pb.SubscribeResponse{
		eventsMsg(put(4, "/w/4", "4"), put(5, "/w/5", "5")),
	}}
	ep := startCache(t, node)
	out, errOut, err := runCLI(t, "kv", "watch", "--tenant", "acme", "/w/", "--from", "t3", "--count", "1", "--cache-endpoints", ep)
	if err != nil {
		t.Fatalf("watch: %v (stderr %q)", err, errOut)
	}
	if want := "PUT /w/4 4 rev=4 token=t4\n"; out != want {
		t.Fatalf("output = %q, want %q", out, want)
	}

	two := &pb.Txn{Revision: 8, Token: "t8", Events: []*pb.Event{
		{Type: pb.Event_PUT, Kv: kv("/w/6", "6", 8)}, {Type: pb.Event_PUT, Kv: kv("/w/7", "7", 8)},
	}}
	node = &scriptedCache{hold: true, script: []*pb.SubscribeResponse{eventsMsg(two, put(9, "/w/9", "9"))}}
	out, errOut, err = runCLI(t, "kv", "watch", "--tenant", "acme", "/w/", "--from", "t4", "--count", "1", "--cache-endpoints", startCache(t, node))
	if err != nil {
		t.Fatalf("watch: %v (stderr %q)", err, errOut)
	}
	if want := "PUT /w/6 6 rev=8\nPUT /w/7 7 rev=8 token=t8\n"; out != want {
		t.Fatalf("a transaction of two keys printed %q, want %q", out, want)
	}
	if got := node.received(); len(got) != 1 || got[0].Token != "t4" {
		t.Fatalf("node got starts %v, want one from t4", got)
	}
}

func TestWatchFromATokenPrintsOnlyWhatFollows(t *testing.T) {
	node := &scriptedCache{hold: true, script: []*pb.SubscribeResponse{
		eventsMsg(put(9, "/routes/x", "X")),
	}}
	out, errOut, err := runCLI(t, "kv", "watch", "--tenant", "acme", "/routes/", "--from", "t8", "--count", "1", "--cache-endpoints", startCache(t, node))
	if err != nil {
		t.Fatalf("watch: %v (stderr %q)", err, errOut)
	}
	if want := "PUT /routes/x X rev=9 token=t9\n"; out != want {
		t.Fatalf("output = %q, want %q", out, want)
	}
	if got := node.received(); len(got) != 1 || got[0].Token != "t8" {
		t.Fatalf("node got starts %v, want one with token t8", got)
	}
}

func TestWatchJSONPrintsOneObjectPerMessage(t *testing.T) {
	node := &scriptedCache{hold: true, script: []*pb.SubscribeResponse{
		resetMsg(0, false, "", kv("/a", "A", 3)),
		resetMsg(1, true, "t4", kv("/b", "B", 4)),
		progressMsg("t4b"),
		eventsMsg(put(5, "/c", "C"), put(6, "/d", "D")),
	}}
	out, errOut, err := runCLI(t, "kv", "watch", "--tenant", "acme", "/", "--count", "2", "-w", "json", "--cache-endpoints", startCache(t, node))
	if err != nil {
		t.Fatalf("watch: %v (stderr %q)", err, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2 (the whole reset, then the events):\n%s", len(lines), out)
	}
	for i, want := range []string{`"/a"`, `"/c"`} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d = %s, want key %s", i, lines[i], want)
		}
	}
	if !strings.Contains(lines[0], `"/b"`) || !strings.Contains(lines[0], `"t4"`) {
		t.Errorf("reset line %s lacks the second chunk or its token", lines[0])
	}
	if !strings.Contains(lines[1], `"t5"`) || !strings.Contains(lines[1], `"t6"`) {
		t.Errorf("events line %s lacks a transaction's token", lines[1])
	}
	// Keys in the shape of the HTTP API: the value a string, revisions
	// numbers.
	if !strings.Contains(lines[0], `"value":"A","create_revision":0,"mod_revision":3`) || !strings.Contains(lines[1], `"value":"C"`) {
		t.Errorf("lines %s lack a key in the HTTP API's shape", out)
	}
}

func TestWatchGivesUpWhenNoNodeAnswers(t *testing.T) {
	var dead []string
	for range 2 {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead = append(dead, lis.Addr().String())
		lis.Close()
	}
	_, _, err := runCLI(t, "kv", "watch", "--tenant", "acme", "/", "--cache-endpoints", strings.Join(dead, ","))
	if err == nil || !strings.Contains(err.Error(), "no cache node answered") {
		t.Fatalf("watch with every node down: err = %v, want 'no cache node answered'", err)
	}
}
