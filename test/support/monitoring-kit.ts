/**
 * The PromQL of the monitoring kit (deploy/prometheus/alerts.yml, deploy/grafana/dashboards/*.json)
 * and the metric names each expression reads, for the tests that hold them to what the code registers.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { REPO_ROOT } from '../../common/config';

export const DEPLOY = path.join(REPO_ROOT, 'deploy');

export interface KitQuery {
  /** `alerts.yml: CollectorErrorRate` or `platform.json: Ingest rate`. */
  where: string;
  expr: string;
}

interface RuleFile {
  groups: Array<{ name: string; rules: Array<{ alert?: string; record?: string; expr: string }> }>;
}

export function alertRules(): RuleFile {
  return parse(fs.readFileSync(path.join(DEPLOY, 'prometheus/alerts.yml'), 'utf8')) as RuleFile;
}

export function kitQueries(): KitQuery[] {
  const out: KitQuery[] = [];
  for (const g of alertRules().groups) for (const r of g.rules) out.push({ where: `alerts.yml: ${r.alert ?? r.record}`, expr: r.expr });
  const dir = path.join(DEPLOY, 'grafana/dashboards');
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.json'))) {
    const dash = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as { panels: Array<{ title: string; targets?: Array<{ expr: string }> }> };
    for (const p of dash.panels) for (const t of p.targets ?? []) out.push({ where: `${file}: ${p.title}`, expr: t.expr });
  }
  return out;
}

const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'inf', 'nan']);

/** The metric names an expression selects (strings, matchers, ranges, label lists, numbers and function names stripped). */
export function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\$__\w+/g, ' ')
    .replace(/(?<![\w:])\d+(\.\d+)?(e[+-]?\d+)?[smhdwy]*/gi, ' ');
  const names = new Set<string>();
  for (const m of bare.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*(?!\s*\(|[a-zA-Z0-9_:])/g)) {
    if (!KEYWORDS.has(m[0].toLowerCase())) names.add(m[0]);
  }
  return [...names];
}

/** A histogram's series names: the metric itself is never selected, its _bucket/_sum/_count are. */
export function seriesNames(name: string, type: string): string[] {
  return type === 'histogram' || type === 'summary' ? [`${name}_bucket`, `${name}_sum`, `${name}_count`, name] : [name];
}
