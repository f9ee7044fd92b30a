// Package crlfetch downloads a CRL over HTTP(S) the way a fleet of
// gatekeepers sharing one CRL URL should: conditionally (ETag and
// If-Modified-Since, so an unchanged CRL costs a 304 and no body), with a
// small size bound, within a timeout, and never following a redirect from
// https to http. It knows nothing of CRLs' contents: the caller checks
// what it gets.
package crlfetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// DefaultMaxSize bounds a fetched CRL unless Client.MaxSize says
// otherwise: 16 MiB holds some 400 000 revoked serials, far more than a
// knock CA revokes, and keeps a hostile or broken server from making the
// daemon hold hundreds of megabytes.
const DefaultMaxSize = 16 << 20

// DefaultTimeout bounds one fetch, redirects and body included.
const DefaultTimeout = 10 * time.Second

// maxRedirects bounds a chain of redirects.
const maxRedirects = 5

// Errors a fetch returns (wrapped), for errors.Is.
var (
	// ErrTooLarge: the CRL is larger than the size bound.
	ErrTooLarge = errors.New("CRL larger than the size bound")
	// ErrDowngrade: an https URL redirected to a plain http one.
	ErrDowngrade = errors.New("redirect from https to http refused")
	// ErrStatus: the server answered neither 200 nor 304.
	ErrStatus = errors.New("unexpected HTTP status")
)

// Validators are what a server said about the version it sent; given
// back, they make the next fetch conditional.
type Validators struct {
	// ETag is the entity tag of the last 200 answer; "" if none.
	ETag string
	// LastModified is its Last-Modified header, as sent; "" if none.
	LastModified string
}

// Result is one fetch's outcome.
type Result struct {
	// NotModified reports a 304: the version the Validators named is
	// still current, and Data is nil.
	NotModified bool
	// Data is the body of a 200 answer.
	Data []byte
	// Validators are those of the version now current: the new ones
	// after a 200, the given ones after a 304.
	Validators Validators
}

// Client fetches CRLs. The zero value is not usable; call New.
type Client struct {
	// MaxSize bounds a CRL's size in bytes; 0 means DefaultMaxSize.
	MaxSize int64
	// Timeout bounds one fetch; 0 means DefaultTimeout.
	Timeout time.Duration
	http    *http.Client
}

// New returns a Client over transport; nil means http.DefaultTransport
// (which honours the proxy environment variables).
func New(transport http.RoundTripper) *Client {
	if transport == nil {
		transport = http.DefaultTransport
	}
	return &Client{http: &http.Client{Transport: transport, CheckRedirect: checkRedirect}}
}

// checkRedirect refuses a downgrade from https to http anywhere in the
// chain (an attacker on the plain path could then serve an old CRL), and
// bounds the chain.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("more than %d redirects", maxRedirects)
	}
	for _, prev := range via {
		if prev.URL.Scheme == "https" && req.URL.Scheme != "https" {
			return fmt.Errorf("%w: %s to %s", ErrDowngrade, prev.URL.Redacted(), req.URL.Redacted())
		}
	}
	return nil
}

// Fetch GETs rawURL, conditionally on prev when it names a version. It
// returns the body of a 200 (at most MaxSize bytes), or NotModified for a
// 304. Every failure is an error naming the URL.
func (c *Client) Fetch(ctx context.Context, rawURL string, prev Validators) (Result, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	maxSize := c.MaxSize
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return Result{}, fmt.Errorf("fetch %s: %w", rawURL, err)
	}
	if prev.ETag != "" {
		req.Header.Set("If-None-Match", prev.ETag)
	}
	if prev.LastModified != "" {
		req.Header.Set("If-Modified-Since", prev.LastModified)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is named below
		}
		return Result{}, fmt.Errorf("fetch %s: %w", rawURL, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		return Result{NotModified: true, Validators: prev}, nil
	case http.StatusOK:
	default:
		return Result{}, fmt.Errorf("fetch %s: %w: %s", rawURL, ErrStatus, resp.Status)
	}
	if resp.ContentLength > maxSize {
		return Result{}, fmt.Errorf("fetch %s: %w: Content-Length %d, bound %d bytes", rawURL, ErrTooLarge, resp.ContentLength, maxSize)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxSize+1))
	if err != nil {
		return Result{}, fmt.Errorf("fetch %s: read body: %w", rawURL, err)
	}
	if int64(len(data)) > maxSize {
		return Result{}, fmt.Errorf("fetch %s: %w: more than %d bytes", rawURL, ErrTooLarge, maxSize)
	}
	return Result{Data: data, Validators: Validators{
		ETag:         resp.Header.Get("ETag"),
		LastModified: resp.Header.Get("Last-Modified"),
	}}, nil
}
