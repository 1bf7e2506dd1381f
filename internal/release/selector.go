package release

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

// op is the operator of one selector requirement.
type op uint8

const (
	opEquals op = iota + 1
	opNotEquals
	opIn
	opNotIn
	opExists
	opAbsent
)

// requirement is one comma-separated term of a selector.
type requirement struct {
	key string
	op  op
	// values holds the one value of = and !=, and the sorted, deduplicated
	// set of in and notin.
	values []string
}

func (r requirement) matches(labels map[string]string) bool {
	v, ok := labels[r.key]
	switch r.op {
	case opEquals:
		return ok && v == r.values[0]
	case opNotEquals:
		return !ok || v != r.values[0]
	case opIn:
		return ok && contains(r.values, v)
	case opNotIn:
		return !ok || !contains(r.values, v)
	case opExists:
		return ok
	case opAbsent:
		return !ok
	}
	return false
}

// contains reports whether the sorted set holds v. Sets are small, so a
// linear scan beats a binary search.
func contains(set []string, v string) bool {
	for _, s := range set {
		if s == v {
			return true
		}
	}
	return false
}

func (r requirement) String() string {
	switch r.op {
	case opEquals:
		return r.key + "=" + r.values[0]
	case opNotEquals:
		return r.key + "!=" + r.values[0]
	case opIn:
		return r.key + " in (" + strings.Join(r.values, ",") + ")"
	case opNotIn:
		return r.key + " notin (" + strings.Join(r.values, ",") + ")"
	case opExists:
		return r.key
	case opAbsent:
		return "!" + r.key
	}
	return ""
}

// Selector is a parsed label selector. Its requirements are joined by
// AND:
//
//	k=v, k==v     label k is present and equals v
//	k!=v          label k is absent or differs from v
//	k in (a,b)    label k is present and is a or b
//	k notin (a,b) label k is absent or is neither a nor b
//	k             label k is present
//	!k            label k is absent
//
// Keys and values are made of letters, digits, '.', '_', '-' and '/';
// blanks around tokens are ignored. The zero Selector has no requirements
// and matches every label set; ParseSelector never returns it.
type Selector struct {
	reqs []requirement
}

// Matches reports whether labels satisfy every requirement.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s.reqs {
		if !r.matches(labels) {
			return false
		}
	}
	return true
}

// String returns the selector in canonical form: requirements in the order
// given, "=" for equality, set values sorted and deduplicated, no blanks
// except around in and notin. Parsing the canonical form gives the same
// selector.
func (s Selector) String() string {
	parts := make([]string, len(s.reqs))
	for i, r := range s.reqs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// ParseSelector parses a label selector such as "zone in (a,b),tier!=edge".
// An error wraps ErrInvalidSelector and names the 1-based position in s
// where parsing stopped and what was expected there.
func ParseSelector(s string) (Selector, error) {
	p := parser{src: s}
	var sel Selector
	for {
		r, err := p.requirement()
		if err != nil {
			return Selector{}, err
		}
		sel.reqs = append(sel.reqs, r)
		p.skipBlanks()
		if p.eof() {
			return sel, nil
		}
		if p.peek() != ',' {
			return Selector{}, p.errorf(`"," between requirements or the end of the selector`)
		}
		p.pos++
	}
}

// parser is a cursor over a selector's text.
type parser struct {
	src string
	pos int
}

func (p *parser) eof() bool  { return p.pos >= len(p.src) }
func (p *parser) peek() byte { return p.src[p.pos] }

func (p *parser) skipBlanks() {
	for !p.eof() && (p.peek() == ' ' || p.peek() == '\t') {
		p.pos++
	}
}

// errorf reports that what was expected is missing at the current
// position.
func (p *parser) errorf(expected string) error {
	found := "end of input"
	if !p.eof() {
		found = fmt.Sprintf("%q", p.src[p.pos:p.pos+1])
	}
	return fmt.Errorf("%w %q at position %d: expected %s, found %s", ErrInvalidSelector, p.src, p.pos+1, expected, found)
}

func isNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == '-' || c == '/'
}

// name reads a label key or value; what names it in the error.
func (p *parser) name(what string) (string, error) {
	p.skipBlanks()
	start := p.pos
	for !p.eof() && isNameByte(p.peek()) {
		p.pos++
	}
	if p.pos == start {
		return "", p.errorf(what)
	}
	return p.src[start:p.pos], nil
}

func (p *parser) requirement() (requirement, error) {
	p.skipBlanks()
	if !p.eof() && p.peek() == '!' {
		p.pos++
		key, err := p.name("a label key after \"!\"")
		if err != nil {
			return requirement{}, err
		}
		return requirement{key: key, op: opAbsent}, nil
	}
	key, err := p.name("a label key")
	if err != nil {
		return requirement{}, err
	}
	p.skipBlanks()
	if p.eof() || p.peek() == ',' {
		return requirement{key: key, op: opExists}, nil
	}
	switch {
	case strings.HasPrefix(p.src[p.pos:], "!="):
		p.pos += 2
		return p.single(key, opNotEquals)
	case strings.HasPrefix(p.src[p.pos:], "=="):
		p.pos += 2
		return p.single(key, opEquals)
	case p.peek() == '=':
		p.pos++
		return p.single(key, opEquals)
	}
	word := p.pos
	for !p.eof() && isNameByte(p.peek()) {
		p.pos++
	}
	switch p.src[word:p.pos] {
	case "in":
		return p.set(key, opIn)
	case "notin":
		return p.set(key, opNotIn)
	}
	p.pos = word
	return requirement{}, p.errorf(`"=", "==", "!=", "in", "notin", "," or the end of the selector after key ` + fmt.Sprintf("%q", key))
}

func (p *parser) single(key string, o op) (requirement, error) {
	v, err := p.name(fmt.Sprintf("a value for key %q", key))
	if err != nil {
		return requirement{}, err
	}
	return requirement{key: key, op: o, values: []string{v}}, nil
}

func (p *parser) set(key string, o op) (requirement, error) {
	p.skipBlanks()
	if p.eof() || p.peek() != '(' {
		return requirement{}, p.errorf(`"(" to open the value list`)
	}
	p.pos++
	var values []string
	for {
		v, err := p.name(fmt.Sprintf("a value in the list of key %q", key))
		if err != nil {
			return requirement{}, err
		}
		values = append(values, v)
		p.skipBlanks()
		if p.eof() {
			return requirement{}, p.errorf(`"," or ")"`)
		}
		switch p.peek() {
		case ',':
			p.pos++
			continue
		case ')':
			p.pos++
			slices.Sort(values)
			return requirement{key: key, op: o, values: slices.Compact(values)}, nil
		}
		return requirement{}, p.errorf(`"," or ")"`)
	}
}

// maxCachedSelectors bounds the parsed-selector cache; when it is full the
// cache starts over.
const maxCachedSelectors = 4096

// parsed caches ParseSelector results by selector text, so Resolve parses
// each selector once. A selector that does not parse is cached too, as
// matching nothing.
var parsed struct {
	mu  sync.RWMutex
	sel map[string]*parsedSelector
}

type parsedSelector struct {
	sel Selector
	ok  bool
}

// cachedSelector returns the parsed selector for s, parsing it on first
// use.
func cachedSelector(s string) *parsedSelector {
	parsed.mu.RLock()
	ps := parsed.sel[s]
	parsed.mu.RUnlock()
	if ps != nil {
		return ps
	}
	sel, err := ParseSelector(s)
	ps = &parsedSelector{sel: sel, ok: err == nil}
	parsed.mu.Lock()
	if parsed.sel == nil || len(parsed.sel) >= maxCachedSelectors {
		parsed.sel = make(map[string]*parsedSelector)
	}
	parsed.sel[s] = ps
	parsed.mu.Unlock()
	return ps
}
