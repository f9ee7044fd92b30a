package client

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"sknock/knock/client/addrecho"
	"sknock/pki"
)

// maxClockSkew is how far this host's clock may be from an authenticated
// time before a port that did not open is blamed on it: the gatekeeper's
// tolerance is 7 s by default, and an HTTP Date has whole seconds.
const maxClockSkew = 5 * time.Second

// selfCheckTimeout bounds each network question of selfCheck.
const selfCheckTimeout = 2 * time.Second

// selfCheck checks, when a port did not open, what the client can check
// by itself, and says what it found wrong ("" when nothing): its
// certificate's validity; its certificate against the CA's CRL, when the
// profile names a CRL URL (Config.CRLURL) or the certificate has a CRL
// distribution point (the CRL's signed thisUpdate is also a lower bound
// on the time); its clock against the address echo's HTTPS Date (an
// authenticated time; see checkClock). host's family is the one asked
// in.
func (c *Client) selfCheck(ctx context.Context, host netip.Addr) string {
	now := c.cfg.Now()
	if c.own != nil {
		switch {
		case now.After(c.own.NotAfter):
			return fmt.Sprintf("your certificate expired on %s: the gatekeeper refuses its knocks (reason expired); ask for a new one", c.own.NotAfter.UTC().Format(dateFormat))
		case now.Before(c.own.NotBefore):
			return fmt.Sprintf("your certificate is not valid before %s: the gatekeeper refuses its knocks until then", c.own.NotBefore.UTC().Format(dateFormat))
		}
		if msg := c.checkRevoked(ctx, now); msg != "" {
			return msg
		}
	}
	return c.checkClock(ctx, host)
}

// checkRevoked fetches the CA's CRL and reports the client's certificate
// revoked, or this host's clock behind the CRL's thisUpdate.
func (c *Client) checkRevoked(ctx context.Context, now time.Time) string {
	url := c.cfg.CRLURL
	if url == "" && len(c.own.CRLDistributionPoints) > 0 {
		url = c.own.CRLDistributionPoints[0]
	}
	if url == "" || len(c.cas) == 0 {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, selfCheckTimeout)
	defer cancel()
	resp, err := addrecho.Get(ctx, "tcp", url, nil, 16<<20)
	if err != nil {
		return ""
	}
	crl, err := pki.ParseCRL(resp.Body, c.cas) // signed by the CA: a plain http:// path cannot forge it
	if err != nil {
		return ""
	}
	if crl.Revoked(c.own.SerialNumber) {
		return fmt.Sprintf("your certificate (serial %s) is revoked by the CA's CRL at %s (issued %s): the gatekeeper refuses its knocks (reason revoked); ask the CA's operator for a new one",
			c.own.SerialNumber, url, crl.ThisUpdate.UTC().Format(dateFormat))
	}
	if crl.ThisUpdate.Sub(now) > maxClockSkew {
		return fmt.Sprintf("this host's clock is at least %s behind: the CA's CRL at %s was signed at %s; the gatekeeper refuses knocks stamped further from its clock than its tolerance (7 s by default): set the clock (NTP)",
			crl.ThisUpdate.Sub(now).Round(time.Second), url, crl.ThisUpdate.UTC().Format(time.RFC3339))
	}
	return ""
}

// checkClock compares this host's clock with the address echo's HTTPS
// Date: the answer seen while learning the public address, or else one
// asked now, but only of an echo named in the configuration (the
// default one is not contacted for this alone).
func (c *Client) checkClock(ctx context.Context, host netip.Addr) string {
	skew, ok := c.echo.skew()
	if !ok {
		if c.cfg.AddressURL == "" {
			return ""
		}
		network := "tcp4"
		if host.Is6() {
			network = "tcp6"
		}
		ctx, cancel := context.WithTimeout(ctx, selfCheckTimeout)
		defer cancel()
		ans, err := addrecho.Ask(ctx, network, c.addressURL(), c.cfg.AddressRoots)
		if err != nil {
			return ""
		}
		c.echo.note(ans.Date, c.cfg.Now())
		if skew, ok = c.echo.skew(); !ok {
			return ""
		}
	}
	if skew < maxClockSkew && -skew < maxClockSkew {
		return ""
	}
	dir := "ahead"
	if skew < 0 {
		dir, skew = "behind", -skew
	}
	return fmt.Sprintf("this host's clock is %s %s of the time in the HTTPS answer of %s; the gatekeeper refuses knocks stamped further from its clock than its tolerance (7 s by default): set the clock (NTP)",
		skew.Round(time.Second), dir, c.addressURL())
}

// addressURL is the address echo asked.
func (c *Client) addressURL() string {
	if c.cfg.AddressURL != "" {
		return c.cfg.AddressURL
	}
	return addrecho.DefaultURL
}
