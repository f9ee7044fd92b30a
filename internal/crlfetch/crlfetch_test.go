package crlfetch

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// crlServer serves body at /ca.crl with an ETag and a Last-Modified, and
// answers a matching conditional request with 304. It counts the full
// answers.
type crlServer struct {
	body  atomic.Pointer[[]byte]
	etag  atomic.Pointer[string]
	fulls atomic.Int64
}

var modified = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func (s *crlServer) set(body, etag string) {
	b := []byte(body)
	s.body.Store(&b)
	s.etag.Store(&etag)
}

func (s *crlServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	etag := *s.etag.Load()
	w.Header().Set("ETag", etag)
	http.ServeContent(w, r, "ca.crl", modified, bytes.NewReader(*s.body.Load()))
	if r.Header.Get("If-None-Match") != etag {
		s.fulls.Add(1)
	}
}

func TestFetchConditional(t *testing.T) {
	srv := &crlServer{}
	srv.set("first", `"v1"`)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	c := New(nil)
	ctx := context.Background()

	first, err := c.Fetch(ctx, ts.URL+"/ca.crl", Validators{})
	if err != nil {
		t.Fatal(err)
	}
	if first.NotModified || string(first.Data) != "first" || first.Validators.ETag != `"v1"` || first.Validators.LastModified == "" {
		t.Fatalf("first fetch = %+v, want the body with its validators", first)
	}
	second, err := c.Fetch(ctx, ts.URL+"/ca.crl", first.Validators)
	if err != nil {
		t.Fatal(err)
	}
	if !second.NotModified || second.Data != nil || second.Validators != first.Validators {
		t.Fatalf("second fetch = %+v, want 304 with the same validators", second)
	}
	srv.set("second", `"v2"`)
	third, err := c.Fetch(ctx, ts.URL+"/ca.crl", second.Validators)
	if err != nil {
		t.Fatal(err)
	}
	if third.NotModified || string(third.Data) != "second" || third.Validators.ETag != `"v2"` {
		t.Fatalf("fetch after a change = %+v, want the new body", third)
	}
	if got := srv.fulls.Load(); got != 2 {
		t.Errorf("server sent %d full answers, want 2 (the unchanged CRL is a 304)", got)
	}
}

func TestFetchRefuses(t *testing.T) {
	big := strings.Repeat("x", 2048)
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			w.Write([]byte(big))
		case "/chunked":
			w.(http.Flusher).Flush() // no Content-Length
			w.Write([]byte(big))
		case "/missing":
			http.NotFound(w, r)
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		case "/slow":
			<-r.Context().Done()
		default:
			w.Write([]byte("small"))
		}
	}))
	defer plain.Close()
	tls := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/down":
			http.Redirect(w, r, plain.URL+"/ok", http.StatusFound)
		case "/hop":
			http.Redirect(w, r, "/ok", http.StatusFound)
		default:
			w.Write([]byte("tls"))
		}
	}))
	defer tls.Close()

	tests := []struct {
		name     string
		url      string
		want     string
		wantErr  error
		wantText string
	}{
		{name: "small", url: plain.URL + "/ok", want: "small"},
		{name: "https redirect within https", url: tls.URL + "/hop", want: "tls"},
		{name: "over the bound by Content-Length", url: plain.URL + "/big", wantErr: ErrTooLarge},
		{name: "over the bound chunked", url: plain.URL + "/chunked", wantErr: ErrTooLarge},
		{name: "https to http", url: tls.URL + "/down", wantErr: ErrDowngrade},
		{name: "404", url: plain.URL + "/missing", wantErr: ErrStatus, wantText: "404"},
		{name: "redirect loop", url: plain.URL + "/loop", wantText: "redirects"},
		{name: "timeout", url: plain.URL + "/slow", wantErr: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(tls.Client().Transport)
			c.MaxSize = 1024
			c.Timeout = 2 * time.Second
			if tt.name == "timeout" {
				c.Timeout = 50 * time.Millisecond
			}
			got, err := c.Fetch(context.Background(), tt.url, Validators{})
			if tt.wantErr == nil && tt.wantText == "" {
				if err != nil || string(got.Data) != tt.want {
					t.Fatalf("Fetch = %q, %v; want %q", got.Data, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Fetch = %d bytes, want an error", len(got.Data))
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantText) || !strings.Contains(err.Error(), tt.url) {
				t.Errorf("error = %q, want it to name %s and say %q", err, tt.url, tt.wantText)
			}
		})
	}
}
