package bench

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// echoHandler answers every request with what it received.
func echoHandler(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"method": r.Method, "uri": r.RequestURI, "auth": r.Header.Get("Authorization"),
		"ctype": r.Header.Get("Content-Type"), "clen": r.ContentLength, "body": string(body),
	})
}

type echoed struct {
	Method, URI, Auth, CType, Body string
	CLen                           int64
}

// TestExchangeReuse: one exchange carries requests of every shape in a
// row, and none inherits a header or body of the one before (a GET after
// a PUT announcing the PUT's Content-Length would hang the server).
func TestExchangeReuse(t *testing.T) {
	for _, tr := range []string{"fasthttp", "net/http", "tls"} {
		t.Run(tr, func(t *testing.T) {
			var ts *httptest.Server
			if tr == "tls" {
				ts = httptest.NewTLSServer(http.HandlerFunc(echoHandler))
			} else {
				ts = httptest.NewServer(http.HandlerFunc(echoHandler))
			}
			defer ts.Close()
			var hc *http.Client
			if tr == "net/http" {
				hc = ts.Client()
			}
			s, err := newServer(ts.URL, hc, tr == "tls", 10*time.Second, new(atomic.Int64))
			if err != nil {
				t.Fatal(err)
			}
			defer s.close()
			if (s.fc == nil) != (tr == "net/http") {
				t.Fatalf("transport: fasthttp %v", s.fc != nil)
			}
			x := s.newExchange(nil)
			steps := []struct {
				method, uri, token, body string
			}{
				{"PUT", "/a/b%21c?x=1", "tok1", `{"k":1}`},
				{"GET", "/get", "tok1", ""},
				{"POST", "/post", "", `{}`},
				{"GET", "/again", "tok2", ""},
				{"POST", "/empty", "tok2", ""},
			}
			for _, st := range steps {
				var payload []byte
				if st.body != "" {
					payload = []byte(st.body)
				}
				data, err := x.call(context.Background(), st.method, []byte(st.uri), "", st.token, payload, 0, retryRateLimit)
				if err != nil {
					t.Fatalf("%s %s: %v", st.method, st.uri, err)
				}
				var e echoed
				if err := json.Unmarshal(data, &e); err != nil {
					t.Fatal(err)
				}
				want := echoed{Method: st.method, URI: st.uri, Body: st.body, CLen: int64(len(st.body))}
				if st.token != "" {
					want.Auth = "Bearer " + st.token
				}
				if st.body != "" {
					want.CType = "application/json"
				}
				if st.method == "GET" || (tr == "net/http" && st.body == "") {
					e.CLen = want.CLen // absent or zero, both fine
				}
				if e != want {
					t.Fatalf("%s %s: server saw %+v, want %+v", st.method, st.uri, e, want)
				}
			}
		})
	}
}

// TestTLSRefusedWithoutInsecure: certificates are checked unless
// --insecure.
func TestTLSRefusedWithoutInsecure(t *testing.T) {
	ts := httptest.NewUnstartedServer(http.HandlerFunc(echoHandler))
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	ts.StartTLS()
	defer ts.Close()
	s, err := newServer(ts.URL, nil, false, 5*time.Second, new(atomic.Int64))
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if _, err := s.do(context.Background(), "GET", "/x", nil, "", nil, nil, 0, retryRateLimit); err == nil {
		t.Fatal("self-signed certificate accepted without insecure")
	}
}

// TestRetryAfterHeader: the rate-limit hint of the Retry-After header is
// read on both transports.
func TestRetryAfterHeader(t *testing.T) {
	h := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusTooManyRequests)
		w.Write([]byte(`{"errcode":"M_LIMIT_EXCEEDED","error":"slow down","retry_after_ms":100}`))
	}
	ts := httptest.NewServer(http.HandlerFunc(h))
	defer ts.Close()
	for _, hc := range []*http.Client{nil, ts.Client()} {
		s, err := newServer(ts.URL, hc, false, 5*time.Second, new(atomic.Int64))
		if err != nil {
			t.Fatal(err)
		}
		x := s.newExchange(nil)
		_, err = x.once(context.Background(), "GET", []byte("/p?q=1"), "", "", nil, time.Second)
		var me *MatrixError
		if !errors.As(err, &me) || me.Status != 429 || me.ErrCode != "M_LIMIT_EXCEEDED" || me.RetryAfter != 7*time.Second || me.Path != "/p" {
			t.Fatalf("err = %#v", err)
		}
		if !strings.Contains(string(me.Body), "slow down") {
			t.Fatalf("body %q", me.Body)
		}
		s.close()
	}
}

// TestListenerClientCancel: ending the context given to cancelWith ends a
// long poll in flight on that client (fasthttp has no context).
func TestListenerClientCancel(t *testing.T) {
	release := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer ts.Close()
	defer close(release)
	s, err := newServer(ts.URL, nil, false, time.Minute, new(atomic.Int64))
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	fc := s.newClient(2)
	ctx, cancel := context.WithCancel(context.Background())
	cancelWith(ctx, fc)
	x := s.newExchange(fc)
	done := make(chan error, 1)
	go func() {
		_, err := x.call(ctx, "GET", []byte("/sync"), syncPath, "t", nil, time.Minute, retryRateLimit)
		done <- err
	}()
	// Let the request reach the server, then cancel.
	for i := 0; i < 100 && fc.hc.ConnsCount() == 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	// The client refuses new work after cancellation.
	if _, err := x.call(context.Background(), "GET", []byte("/sync"), syncPath, "t", nil, time.Minute, retryRateLimit); err == nil {
		t.Fatal("cancelled client still dials")
	}
}

func TestAppendQueryEscape(t *testing.T) {
	var all []byte
	for c := 0; c < 256; c++ {
		all = append(all, byte(c))
	}
	for _, s := range []string{"", "s72_1", `{"room":{"timeline":{"limit":200}}}`, "a b+c&d=e/f?g#h%i~j", string(all)} {
		if got := string(appendQueryEscape([]byte("x"), s)); got != "x"+url.QueryEscape(s) {
			t.Errorf("%q: %q, want %q", s, got, url.QueryEscape(s))
		}
		if got := string(appendQueryEscape(nil, []byte(s))); got != url.QueryEscape(s) {
			t.Errorf("%q as bytes: %q", s, got)
		}
	}
}

// TestSyncURI: the listener's long-poll query is what url.Values.Encode
// wrote before.
func TestSyncURI(t *testing.T) {
	for _, tt := range []struct{ filter, since string }{{"7", "s1_2"}, {`{"a":1}`, ""}, {"", "x y"}} {
		l := &listener{filter: tt.filter, since: []byte(tt.since)}
		q := url.Values{}
		if tt.since != "" {
			q.Set("since", tt.since)
		}
		if tt.filter != "" {
			q.Set("filter", tt.filter)
		}
		q.Set("timeout", strconv.Itoa(30000))
		if got, want := string(l.appendSyncURI(nil, 30*time.Second)), syncPath+"?"+q.Encode(); got != want {
			t.Errorf("%q", got)
			t.Errorf("%q (want)", want)
		}
	}
}

// TestMessageBody: the pre-encoded body is byte for byte what
// encoding/json writes for messageContent.
func TestMessageBody(t *testing.T) {
	for _, marker := range []string{"bench 0a1b2c3d ", `b<&>"\ é `} {
		for _, size := range []int{0, 5, 20, 21, 22, 500} {
			mb := newMessageBody(marker, size)
			for _, seq := range []int{0, 7, 123456} {
				want, err := json.Marshal(messageContent(marker, seq, size))
				if err != nil {
					t.Fatal(err)
				}
				if got := mb.appendTo([]byte("junk"), seq); string(got) != "junk"+string(want) {
					t.Fatalf("marker %q size %d seq %d:\n got %s\nwant %s", marker, size, seq, got[4:], want)
				}
			}
		}
	}
}

// BenchmarkRecordView: a listener's bookkeeping for one answer of 50
// messages (per delivery: ns/op / 50).
func BenchmarkRecordView(b *testing.B) {
	data := benchSyncAnswer()
	l := &listener{rooms: []string{"!Zb-BUfzVBnN0qRiehqtz4v42f6jziA6uWIiY0bM29og"}, seen: make([]atomic.Int64, 100)}
	if err := l.view.parse(data, l.roomIndex); err != nil || len(l.view.rooms) != 1 {
		b.Fatal(err)
	}
	evs := l.view.roomEvents(0)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%64 == 0 {
			for j := range l.seen {
				l.seen[j].Store(0)
			}
		}
		l.recordView(evs, "bench abcdef12 ", int64(i))
	}
}
