// Package sse reads Server-Sent Events (the text/event-stream format of
// the HTML standard): the events of a cache node's subscription door, for
// Go clients, tests and benchmarks.
//
//	r := sse.NewReader(resp.Body)
//	for {
//		ev, err := r.Next()
//		...
//	}
package sse

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
)

// Event is one event: its id (empty when the event set none; the
// standard's last event id then stays what it was), its name ("message"
// when unnamed) and its data, the data lines joined by newlines.
type Event struct {
	ID   string
	Name string
	Data []byte
}

// Reader reads events from a stream.
type Reader struct {
	r *bufio.Reader
	// LastID is the id of the last event that set one, what a reconnect
	// sends as Last-Event-ID.
	LastID string
	// Retry is the reconnect delay the stream last asked for, in
	// milliseconds; zero when it asked none.
	Retry int
}

// NewReader reads events from r, through a buffer of 64 KiB unless r is
// already buffered.
func NewReader(r io.Reader) *Reader {
	if br, ok := r.(*bufio.Reader); ok {
		return &Reader{r: br}
	}
	return &Reader{r: bufio.NewReaderSize(r, 64<<10)}
}

// Next returns the next event; io.EOF when the stream ended between
// events.
func (r *Reader) Next() (Event, error) {
	var ev Event
	var data bytes.Buffer
	seen := false
	for {
		line, err := r.r.ReadBytes('\n')
		if err != nil {
			if err == io.EOF && len(line) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return Event{}, err
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if len(line) == 0 {
			if !seen {
				continue
			}
			if ev.Name == "" {
				ev.Name = "message"
			}
			ev.Data = bytes.TrimSuffix(data.Bytes(), []byte("\n"))
			if ev.ID != "" {
				r.LastID = ev.ID
			}
			return ev, nil
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "event":
			ev.Name, seen = string(value), true
		case "data":
			data.Write(value)
			data.WriteByte('\n')
			seen = true
		case "id":
			ev.ID, seen = string(value), true
		case "retry":
			if n, err := strconv.Atoi(string(value)); err == nil {
				r.Retry = n
			}
		}
	}
}
