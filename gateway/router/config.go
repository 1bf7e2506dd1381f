package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/confetti-io/confetti/api/confettipb"
)

// ErrBadConfig reports a route, upstream or instance value the router
// cannot use; the key is skipped (and refused by Validate).
var ErrBadConfig = errors.New("router: invalid config")

// Route is the value of the key /routes/<id>, in the shape of an APISIX route:
//
//	{"uri": "/api/*", "methods": ["GET"], "host": "example.com",
//	 "upstream_id": "web", "priority": 10}
//
// uri (or uris) is an exact path or a prefix ending in "*"; methods and
// host (or hosts, "*.example.com" matches subdomains) are optional and
// match anything when empty. upstream_id names kv/upstreams/<id>, or
// upstream gives one inline. Among matching routes the highest priority
// wins, then the more specific uri (exact, then the longer prefix), then a
// route with a host. Fields of APISIX routes the router does not know
// (plugins, name, ...) are ignored.
type Route struct {
	URI        string    `json:"uri,omitempty"`
	URIs       []string  `json:"uris,omitempty"`
	Methods    []string  `json:"methods,omitempty"`
	Host       string    `json:"host,omitempty"`
	Hosts      []string  `json:"hosts,omitempty"`
	Priority   int       `json:"priority,omitempty"`
	UpstreamID idString  `json:"upstream_id,omitempty"`
	Upstream   *Upstream `json:"upstream,omitempty"`
}

// Upstream is the value of kv/upstreams/<id>, in the shape of an APISIX
// upstream:
//
//	{"type": "roundrobin", "nodes": {"10.0.0.7:8080": 1}, "service": "web"}
//
// nodes is a map of host:port to weight or APISIX's list of
// {"host", "port", "weight"}; a node of weight 0 takes no traffic. With
// service (or service_name) the upstream also takes every live instance
// registered for the service (an instance without a weight counts 1).
// type must be roundrobin (smooth weighted round-robin) or empty.
type Upstream struct {
	Type        string `json:"type,omitempty"`
	Nodes       nodes  `json:"nodes,omitempty"`
	Service     string `json:"service,omitempty"`
	ServiceName string `json:"service_name,omitempty"`
}

// idString accepts an id as a JSON string or number (APISIX allows both).
type idString string

func (s *idString) UnmarshalJSON(b []byte) error {
	var n json.Number
	if err := json.Unmarshal(b, &n); err == nil {
		*s = idString(n.String())
		return nil
	}
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return fmt.Errorf("an id must be a string or a number, not %s", b)
	}
	*s = idString(str)
	return nil
}

// nodes is an upstream's static nodes: address -> weight.
type nodes map[string]int

func (n *nodes) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '[' {
		var list []struct {
			Host   string `json:"host"`
			Port   int    `json:"port"`
			Weight int    `json:"weight"`
		}
		if err := json.Unmarshal(b, &list); err != nil {
			return err
		}
		*n = nodes{}
		for _, e := range list {
			addr := e.Host
			if e.Port != 0 {
				addr = net.JoinHostPort(e.Host, strconv.Itoa(e.Port))
			}
			(*n)[addr] = e.Weight
		}
		return nil
	}
	var m map[string]int
	if err := json.Unmarshal(b, &m); err != nil {
		return errors.New(`nodes must be {"host:port": weight, ...} or [{"host": ..., "port": ..., "weight": ...}, ...]`)
	}
	*n = m
	return nil
}

var methods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "PURGE"}

// ParseRoute decodes and checks a route value.
func ParseRoute(value []byte) (*Route, error) {
	var r Route
	if err := json.Unmarshal(value, &r); err != nil {
		return nil, fmt.Errorf("%w: route is not JSON of the APISIX route shape: %v", ErrBadConfig, err)
	}
	if r.URI != "" {
		r.URIs = append([]string{r.URI}, r.URIs...)
	}
	if len(r.URIs) == 0 {
		return nil, fmt.Errorf(`%w: route has no uri (give "uri": "/path" or "/prefix/*")`, ErrBadConfig)
	}
	for _, u := range r.URIs {
		if !strings.HasPrefix(u, "/") || strings.Contains(strings.TrimSuffix(u, "*"), "*") {
			return nil, fmt.Errorf(`%w: route uri %q must start with "/" and may hold "*" only at its end`, ErrBadConfig, u)
		}
	}
	for i, m := range r.Methods {
		r.Methods[i] = strings.ToUpper(m)
		if !slices.Contains(methods, r.Methods[i]) {
			return nil, fmt.Errorf("%w: route method %q is not one of %s", ErrBadConfig, m, strings.Join(methods, ", "))
		}
	}
	if r.Host != "" {
		r.Hosts = append([]string{r.Host}, r.Hosts...)
	}
	for i, h := range r.Hosts {
		r.Hosts[i] = strings.ToLower(h)
	}
	if r.Upstream != nil {
		if err := r.Upstream.check(); err != nil {
			return nil, err
		}
	} else if r.UpstreamID == "" {
		return nil, fmt.Errorf(`%w: route has neither "upstream_id" nor "upstream"`, ErrBadConfig)
	}
	return &r, nil
}

// ParseUpstream decodes and checks an upstream value.
func ParseUpstream(value []byte) (*Upstream, error) {
	var u Upstream
	if err := json.Unmarshal(value, &u); err != nil {
		return nil, fmt.Errorf("%w: upstream is not JSON of the APISIX upstream shape: %v", ErrBadConfig, err)
	}
	return &u, u.check()
}

func (u *Upstream) check() error {
	if u.Service == "" {
		u.Service = u.ServiceName
	}
	if u.Type != "" && u.Type != "roundrobin" {
		return fmt.Errorf(`%w: upstream type %q is not supported (use "roundrobin")`, ErrBadConfig, u.Type)
	}
	if len(u.Nodes) == 0 && u.Service == "" {
		return fmt.Errorf(`%w: upstream has neither "nodes" nor "service"`, ErrBadConfig)
	}
	for addr, w := range u.Nodes {
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			return fmt.Errorf("%w: upstream node %q is not host:port", ErrBadConfig, addr)
		}
		if w < 0 {
			return fmt.Errorf("%w: upstream node %s has negative weight %d", ErrBadConfig, addr, w)
		}
	}
	return nil
}

// instance is the value of a service instance that the shard proxy
// writes on registration.
type instance struct {
	Address string            `json:"address"`
	Labels  map[string]string `json:"labels,omitempty"`
	Weight  int               `json:"weight,omitempty"`
}

func parseInstance(value []byte) (*instance, error) {
	var in instance
	if err := json.Unmarshal(value, &in); err != nil {
		return nil, fmt.Errorf("%w: instance is not JSON: %v", ErrBadConfig, err)
	}
	if _, _, err := net.SplitHostPort(in.Address); err != nil {
		return nil, fmt.Errorf("%w: instance address %q is not host:port", ErrBadConfig, in.Address)
	}
	if in.Weight == 0 {
		in.Weight = 1
	}
	return &in, nil
}

// The keys the router reads: routes /routes/<id>, upstreams
// /upstreams/<id>, and every service's instances.
const (
	routesPrefix    = "/routes/"
	upstreamsPrefix = "/upstreams/"
)

// Prefixes are the plain keys the router subscribes to (gateway.Config's
// Prefixes): routes and upstreams.
var Prefixes = []string{routesPrefix, upstreamsPrefix}

// Services are the services the router subscribes to (gateway.Config's
// Services): every one, since upstreams name them.
var Services = []string{"*"}

// keyKind tells what a subscription key holds for the router.
type keyKind int

const (
	kindOther keyKind = iota
	kindRoute
	kindUpstream
	kindInstance
)

// classify reads a key of the view: a route or upstream and its id, or a
// service instance and its service.
func classify(key string, kind confettipb.KeyValue_Kind) (keyKind, string) {
	switch kind {
	case confettipb.KeyValue_KEY:
		if id, ok := strings.CutPrefix(key, routesPrefix); ok && id != "" {
			return kindRoute, id
		}
		if id, ok := strings.CutPrefix(key, upstreamsPrefix); ok && id != "" {
			return kindUpstream, id
		}
	case confettipb.KeyValue_SERVICE:
		if service, _, ok := strings.Cut(key, "/"); ok && service != "" {
			return kindInstance, service
		}
	}
	return kindOther, ""
}

// Validate checks a route, upstream or instance value before the SDK
// admits it (gateway.Config.Validate): a bad value is refused, so the
// previous one keeps serving, and a config item carrying it is NACKed.
// Other keys are accepted.
func Validate(key string, kv *confettipb.KeyValue) error {
	var err error
	switch kind, _ := classify(key, kv.GetKind()); kind {
	case kindRoute:
		_, err = ParseRoute(kv.GetValue())
	case kindUpstream:
		_, err = ParseUpstream(kv.GetValue())
	case kindInstance:
		_, err = parseInstance(kv.GetValue())
	}
	return err
}
