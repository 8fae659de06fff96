package provision

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/cloudflare/cloudflare-go/v6/dns"
)

// Record is a DNS record of the zone.
type Record struct {
	ID, Type, Name, Content string
	Proxied                 bool
}

// TunnelTarget is the CNAME target of a tunnel.
func TunnelTarget(tunnelID string) string { return tunnelID + tunnelSuffix }

// UpsertCNAME makes hostname a proxied CNAME to the tunnel: it creates the
// record, or updates the CNAME already on the name. It refuses to replace
// an A or AAAA record it did not make.
func (c *Cloudflare) UpsertCNAME(ctx context.Context, hostname, tunnelID string) (Record, error) {
	var r Record
	err := c.retry.do(ctx, c.log, "upsert record", classifyEnsure(cfRecordNameTaken), func(ctx context.Context) (err error) {
		r, err = c.upsertCNAME(ctx, hostname, TunnelTarget(tunnelID))
		return err
	})
	return r, err
}

func (c *Cloudflare) upsertCNAME(ctx context.Context, hostname, target string) (Record, error) {
	existing, err := c.Records(ctx, hostname)
	if err != nil {
		return Record{}, err
	}
	for _, r := range existing {
		if r.Type != "CNAME" {
			return Record{}, fmt.Errorf("cloudflare record %s: a %s record (%s) holds the name; remove it or pick another slug", hostname, r.Type, r.ID)
		}
	}
	if len(existing) == 0 {
		return c.createCNAME(ctx, hostname, target)
	}
	r := existing[0]
	if r.Content == target && r.Proxied {
		c.log.Info("cname already set", "hostname", hostname, "target", target)
		return r, nil
	}
	return c.updateCNAME(ctx, r.ID, hostname, target)
}

func cnameBody(hostname, target string) dns.CNAMERecordParam {
	var b dns.CNAMERecordParam
	b.Name.Value, b.Name.Present = hostname, true
	b.Type.Value, b.Type.Present = dns.CNAMERecordTypeCNAME, true
	b.Content.Value, b.Content.Present = target, true
	b.Proxied.Value, b.Proxied.Present = true, true
	b.TTL.Value, b.TTL.Present = dns.TTL1, true
	b.Comment.Value, b.Comment.Present = "molecule tenant tunnel", true
	return b
}

func (c *Cloudflare) createCNAME(ctx context.Context, hostname, target string) (Record, error) {
	var p dns.RecordNewParams
	p.ZoneID.Value, p.ZoneID.Present = c.cfg.ZoneID, true
	p.Body = cnameBody(hostname, target)
	// Not retried alone: UpsertCNAME's next pass finds what a lost answer
	// created.
	r, err := c.records.New(ctx, p)
	if err != nil {
		return Record{}, wrapCF("create record", hostname, err)
	}
	c.log.Info("cname created", "hostname", hostname, "target", target)
	return fromDNS(r), nil
}

func (c *Cloudflare) updateCNAME(ctx context.Context, id, hostname, target string) (Record, error) {
	var p dns.RecordUpdateParams
	p.ZoneID.Value, p.ZoneID.Present = c.cfg.ZoneID, true
	p.Body = cnameBody(hostname, target)
	var r *dns.RecordResponse
	err := c.retry.do(ctx, c.log, "update record", classifyCF, func(ctx context.Context) (err error) {
		r, err = c.records.Update(ctx, id, p)
		return err
	})
	if err != nil {
		return Record{}, wrapCF("update record", hostname, err)
	}
	c.log.Info("cname updated", "hostname", hostname, "target", target)
	return fromDNS(r), nil
}

// Records lists the records named hostname (every record of the zone for
// hostname "").
func (c *Cloudflare) Records(ctx context.Context, hostname string) ([]Record, error) {
	var p dns.RecordListParams
	p.ZoneID.Value, p.ZoneID.Present = c.cfg.ZoneID, true
	if hostname != "" {
		var name dns.RecordListParamsName
		name.Exact.Value, name.Exact.Present = hostname, true
		p.Name.Value, p.Name.Present = name, true
	}
	var out []Record
	err := c.retry.do(ctx, c.log, "list records", classifyCF, func(ctx context.Context) error {
		out = out[:0]
		page, err := c.records.List(ctx, p)
		for ; err == nil && page != nil && len(page.Result) > 0; page, err = page.GetNextPage() {
			for i := range page.Result {
				out = append(out, fromDNS(&page.Result[i]))
			}
		}
		return err
	})
	if err != nil {
		return nil, wrapCF("list records", hostname, err)
	}
	return out, nil
}

// DeleteCNAME deletes the CNAMEs on hostname that point at a tunnel. A name
// with none counts as done; other records on it are left alone.
func (c *Cloudflare) DeleteCNAME(ctx context.Context, hostname string) error {
	recs, err := c.Records(ctx, hostname)
	if err != nil {
		return err
	}
	var dp dns.RecordDeleteParams
	dp.ZoneID.Value, dp.ZoneID.Present = c.cfg.ZoneID, true
	for _, r := range recs {
		if r.Type != "CNAME" || !strings.HasSuffix(r.Content, tunnelSuffix) {
			continue
		}
		err := c.retry.do(ctx, c.log, "delete record", classifyCF, func(ctx context.Context) error {
			_, err := c.records.Delete(ctx, r.ID, dp)
			return err
		})
		if err != nil && !cfHasCode(err, cfRecordNotFound) && cfStatus(err) != http.StatusNotFound {
			return wrapCF("delete record", hostname, err)
		}
		c.log.Info("cname deleted", "hostname", hostname, "record", r.ID)
	}
	return nil
}

func fromDNS(r *dns.RecordResponse) Record {
	return Record{ID: r.ID, Type: string(r.Type), Name: r.Name, Content: r.Content, Proxied: r.Proxied}
}
