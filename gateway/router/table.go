package router

import (
	"cmp"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/gateway"
)

// table is an immutable route table built from one view. Requests load
// the current table once and keep it: a rebuild never disturbs them.
type table struct {
	token     string
	routes    []*route
	upstreams map[string]*upstream
	// parsed caches every route and upstream value by key and mod
	// revision, so that the next build parses only what changed.
	parsed map[string]parsed
	errors []KeyError
	// synced is false until the source delivered a view.
	synced bool
}

type parsed struct {
	modRev   int64
	route    *Route
	upstream *Upstream
	err      error
}

// route is a Route ready to match.
type route struct {
	*Route
	id, key  string
	upstream *upstream
	// missing names the upstream_id that does not exist.
	missing string
}

// upstream is an upstream with its balanced nodes.
type upstream struct {
	id      string
	service string
	bal     *balancer
}

// KeyError is a key the router skipped, with why.
type KeyError struct {
	Key    string `json:"key"`
	Error  string `json:"error"`
	modRev int64
}

// build makes the table of view. prev, if set, lends its parsed values
// and round-robin state.
func build(view *gateway.View, prev *table, healthOf func(string) *health) *table {
	t := &table{token: view.Token(), upstreams: map[string]*upstream{}, parsed: map[string]parsed{}, synced: view.Token() != ""}
	prevParsed := map[string]parsed{}
	if prev != nil {
		prevParsed = prev.parsed
	}
	parse := func(key string, kv *confettipb.KeyValue, kind keyKind) parsed {
		if p, ok := prevParsed[key]; ok && p.modRev == kv.ModRevision {
			t.parsed[key] = p
			return p
		}
		p := parsed{modRev: kv.ModRevision}
		if kind == kindRoute {
			p.route, p.err = ParseRoute(kv.Value)
		} else {
			p.upstream, p.err = ParseUpstream(kv.Value)
		}
		t.parsed[key] = p
		return p
	}
	// Instances by service.
	services := map[string]map[string]int{}
	view.RangeInstances("", func(key string, kv *confettipb.KeyValue) bool {
		_, service := classify(key, kv.GetKind())
		in, err := parseInstance(kv.Value)
		if err != nil {
			t.errors = append(t.errors, KeyError{Key: key, Error: err.Error(), modRev: kv.ModRevision})
			return true
		}
		if services[service] == nil {
			services[service] = map[string]int{}
		}
		services[service][in.Address] += in.Weight
		return true
	})
	newUpstream := func(id string, u *Upstream) *upstream {
		weights := map[string]int{}
		for addr, w := range u.Nodes {
			weights[addr] += w
		}
		for addr, w := range services[u.Service] {
			weights[addr] += w
		}
		var prevBal *balancer
		if prev != nil && prev.upstreams[id] != nil {
			prevBal = prev.upstreams[id].bal
		}
		return &upstream{id: id, service: u.Service, bal: newBalancer(weights, healthOf, prevBal)}
	}
	view.Range(upstreamsPrefix, func(key string, kv *confettipb.KeyValue) bool {
		kind, id := classify(key, kv.GetKind())
		if kind != kindUpstream {
			return true
		}
		p := parse(key, kv, kind)
		if p.err != nil {
			t.errors = append(t.errors, KeyError{Key: key, Error: p.err.Error(), modRev: kv.ModRevision})
			return true
		}
		t.upstreams[id] = newUpstream(id, p.upstream)
		return true
	})
	view.Range(routesPrefix, func(key string, kv *confettipb.KeyValue) bool {
		kind, id := classify(key, kv.GetKind())
		if kind != kindRoute {
			return true
		}
		p := parse(key, kv, kind)
		if p.err != nil {
			t.errors = append(t.errors, KeyError{Key: key, Error: p.err.Error(), modRev: kv.ModRevision})
			return true
		}
		r := &route{Route: p.route, id: id, key: key}
		switch {
		case p.route.Upstream != nil:
			r.upstream = newUpstream("route:"+id, p.route.Upstream)
		case t.upstreams[string(p.route.UpstreamID)] != nil:
			r.upstream = t.upstreams[string(p.route.UpstreamID)]
		default:
			r.missing = string(p.route.UpstreamID)
		}
		t.routes = append(t.routes, r)
		return true
	})
	slices.SortStableFunc(t.routes, compareRoutes)
	return t
}

// compareRoutes orders routes as they are tried: higher priority, then
// the more specific uri, then with a host, then by key.
func compareRoutes(a, b *route) int {
	if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
		return c
	}
	if c := cmp.Compare(specificity(b.URIs), specificity(a.URIs)); c != 0 {
		return c
	}
	if c := cmp.Compare(min(len(b.Hosts), 1), min(len(a.Hosts), 1)); c != 0 {
		return c
	}
	return strings.Compare(a.key, b.key)
}

// specificity ranks a route's most specific uri: exact paths above any
// prefix, longer prefixes above shorter ones.
func specificity(uris []string) int {
	best := 0
	for _, u := range uris {
		s := len(u)
		if !strings.HasSuffix(u, "*") {
			s += 1 << 20
		}
		best = max(best, s)
	}
	return best
}

// match returns the first route that matches r.
func (t *table) match(r *http.Request) *route {
	host := strings.ToLower(r.Host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	for _, rt := range t.routes {
		if rt.matches(r.Method, host, r.URL.Path) {
			return rt
		}
	}
	return nil
}

func (rt *route) matches(method, host, path string) bool {
	if len(rt.Methods) > 0 && !slices.Contains(rt.Methods, method) {
		return false
	}
	if len(rt.Hosts) > 0 && !slices.ContainsFunc(rt.Hosts, func(h string) bool { return hostMatches(h, host) }) {
		return false
	}
	return slices.ContainsFunc(rt.URIs, func(u string) bool {
		if prefix, ok := strings.CutSuffix(u, "*"); ok {
			return strings.HasPrefix(path, prefix)
		}
		return path == u
	})
}

// hostMatches matches a host pattern: exact, or "*.example.com" for any
// subdomain of example.com.
func hostMatches(pattern, host string) bool {
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return strings.HasSuffix(host, suffix) && len(host) > len(suffix)
	}
	return pattern == host
}

// RouteStatus is one route of the table as /__confetti/status shows it.
type RouteStatus struct {
	ID         string       `json:"id"`
	Key        string       `json:"key"`
	URIs       []string     `json:"uris"`
	Methods    []string     `json:"methods,omitempty"`
	Hosts      []string     `json:"hosts,omitempty"`
	Priority   int          `json:"priority,omitempty"`
	UpstreamID string       `json:"upstream_id"`
	Service    string       `json:"service,omitempty"`
	Nodes      []NodeStatus `json:"nodes"`
	Error      string       `json:"error,omitempty"`
}

// NodeStatus is one node of an upstream.
type NodeStatus struct {
	Address string `json:"address"`
	Weight  int    `json:"weight"`
	// Up is false while passive health checks hold the node down.
	Up bool `json:"up"`
}

func (t *table) status(now time.Time) []RouteStatus {
	out := make([]RouteStatus, 0, len(t.routes))
	for _, rt := range t.routes {
		s := RouteStatus{ID: rt.id, Key: rt.key, URIs: rt.URIs, Methods: rt.Methods, Hosts: rt.Hosts, Priority: rt.Priority, UpstreamID: string(rt.UpstreamID), Nodes: []NodeStatus{}}
		if rt.upstream != nil {
			s.Service, s.Nodes = rt.upstream.service, rt.upstream.bal.snapshot(now)
		} else {
			s.Error = "upstream " + rt.missing + " does not exist"
		}
		out = append(out, s)
	}
	return out
}
