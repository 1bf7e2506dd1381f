package sse

import (
	"io"
	"strings"
	"testing"
)

func TestReaderFollowsTheStandard(t *testing.T) {
	r := NewReader(strings.NewReader("retry: 1000\n\n: a comment\nid: t1\nevent: reset\ndata: {\"a\":1}\n\ndata: one\ndata: two\n\nid: t2\r\nevent: events\r\ndata: x\r\n\r\n"))
	for i, want := range []Event{
		{ID: "t1", Name: "reset", Data: []byte(`{"a":1}`)},
		{Name: "message", Data: []byte("one\ntwo")},
		{ID: "t2", Name: "events", Data: []byte("x")},
	} {
		ev, err := r.Next()
		if err != nil || ev.ID != want.ID || ev.Name != want.Name || string(ev.Data) != string(want.Data) {
			t.Fatalf("event %d = %+v, %v; want %+v", i, ev, err, want)
		}
	}
	if r.Retry != 1000 || r.LastID != "t2" {
		t.Fatalf("retry %d, last id %q", r.Retry, r.LastID)
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
}
