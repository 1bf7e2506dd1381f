package chaos

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// echo serves a line echo on loopback until the test ends.
func echo(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

func TestLinkBlackholesAndHeals(t *testing.T) {
	l, err := newLink("a>b", echo(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	roundTrip := func(msg string, wait time.Duration) (string, error) {
		if _, err := c.Write([]byte(msg + "\n")); err != nil {
			return "", err
		}
		c.SetReadDeadline(time.Now().Add(wait))
		return r.ReadString('\n')
	}
	if got, err := roundTrip("one", 10*time.Second); err != nil || got != "one\n" {
		t.Fatalf("through a healthy link: %q, %v", got, err)
	}
	l.Blackhole()
	if got, err := roundTrip("two", 300*time.Millisecond); err == nil {
		t.Fatalf("through a blackhole: %q arrived", got)
	}
	l.Heal()
	// The connection lived through the fault: the held bytes arrive.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got, err := r.ReadString('\n'); err != nil || got != "two\n" {
		t.Fatalf("after heal: %q, %v", got, err)
	}
	l.Reset()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("a reset link left the connection open")
	}
}
