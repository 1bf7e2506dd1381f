package gateway_test

import (
	"context"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/gateway"
)

// Example subscribes to a tenant's routes, a config item and a service's
// instances, named as their writers name them (`confetti kv put /routes/hello
// ...`, `confetti item publish gateway ...`, `confetti svc register hello
// b-1 ...`), waits for the first sync and reads the view. The endpoint would be a cache
// node's address (confetti dev serves 127.0.0.1:7710 and :7711); here it
// is a stand-in that serves one Reset, so that the example runs alone.
func Example() {
	endpoint, stop := exampleCache()
	defer stop()
	dir, _ := os.MkdirTemp("", "gateway-example")
	defer os.RemoveAll(dir)

	c, err := gateway.New(gateway.Config{
		Endpoints:   []string{endpoint},
		Tenant:      "demo",
		Prefixes:    []string{"/routes/"},
		Items:       []string{"gateway"},
		Services:    []string{"hello"},
		Identity:    gateway.Identity{InstanceID: "gw-1", Labels: map[string]string{"zone": "a"}},
		APIKey:      os.Getenv("CONFETTI_API_KEY"),
		SnapshotDir: dir, // a restart serves the last view at once
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	c.OnChange(func(ch gateway.Change) {
		for _, u := range ch.Updates {
			fmt.Printf("%s: %s %s changed\n", ch.Source, u.Kind, u.Key)
		}
	})
	if err := c.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	<-c.Ready()

	// Reads take no lock: a View is immutable and swapped atomically.
	if kv, ok := c.Get("/routes/hello"); ok {
		fmt.Printf("route: %s\n", kv.Value)
	}
	if kv, ok := c.Item("gateway"); ok {
		fmt.Printf("item: gateway v%d %s\n", kv.Item.Version, kv.Value)
	}
	c.View().RangeInstances("hello", func(key string, kv *confettipb.KeyValue) bool {
		fmt.Printf("instance: %s %s\n", key, kv.Value)
		return true
	})
	// Output:
	// reset: KEY /routes/hello changed
	// reset: ITEM gateway changed
	// reset: SERVICE hello/b-1 changed
	// route: {"uri":"/hello","upstream_id":"web"}
	// item: gateway v3 {"timeout":5}
	// instance: hello/b-1 {"address":"127.0.0.1:8081"}
}

// exampleCache serves a stand-in cache node on a loopback port.
func exampleCache() (string, func()) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := grpc.NewServer()
	confettipb.RegisterCacheServer(srv, &fakeCache{acks: make(chan *confettipb.Ack, 1), script: []*confettipb.SubscribeResponse{
		{Response: &confettipb.SubscribeResponse_Reset_{Reset_: &confettipb.Reset{Last: true, Token: "t1", Kvs: []*confettipb.KeyValue{
			{Key: "/routes/hello", Value: []byte(`{"uri":"/hello","upstream_id":"web"}`), ModRevision: 2},
			{Key: "gateway", Kind: confettipb.KeyValue_ITEM, Value: []byte(`{"timeout":5}`), ModRevision: 4, Item: &confettipb.ItemRef{Item: "gateway", Version: 3}},
			{Key: "hello/b-1", Kind: confettipb.KeyValue_SERVICE, Value: []byte(`{"address":"127.0.0.1:8081"}`), ModRevision: 3},
		}}}},
	}})
	go srv.Serve(lis)
	return lis.Addr().String(), srv.Stop
}
