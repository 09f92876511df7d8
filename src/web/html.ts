/** Escaping and the page frame of the dashboard's server-rendered HTML. */
export function esc(v: string | number | undefined): string {
  return String(v ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

export interface PageUser {
  user: string;
  admin: boolean;
}

const NAV: Array<[string, string]> = [
  ['/jobs', 'Jobs'],
  ['/history', 'History'],
  ['/charts', 'Queue & utilisation'],
  ['/headnodes', 'Headnodes'],
  ['/clones', 'Clones'],
];

export function page(title: string, who: PageUser, body: string, scripts: string[] = []): string {
  const nav = NAV.map(([href, label]) => `<a href="${href}"${label === title ? ' class="here"' : ''}>${esc(label)}</a>`).join('');
  const admin = who.admin ? '<a href="/admin/queue/">Raw queue (bull-board)</a>' : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)} · Copper</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/dashboard.css"></head>
<body><header><span class="brand">Copper</span><nav>${nav}${admin}</nav>
<span class="who" id="who">${esc(who.user)}${who.admin ? ' (admin)' : ''}</span></header>
<main><h1>${esc(title)}</h1>${body}</main>
${scripts.map((s) => `<script src="${esc(s)}"></script>`).join('\n')}
</body></html>`;
}

export function table(cls: string, head: string[], rows: string[][], empty: string): string {
  if (rows.length === 0) return `<p class="empty ${esc(cls)}">${esc(empty)}</p>`;
  return `<table class="${esc(cls)}"><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead>
<tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join('')}</tr>`).join('\n')}</tbody></table>`;
}

export function when(ms: number | undefined): string {
  if (ms === undefined) return '';
  return new Date(ms).toISOString().replace('T', ' ').slice(0, 19);
}

export function duration(sec: number): string {
  const s = Math.max(0, Math.round(sec));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return `${String(h).padStart(2, '0')}:${String(m).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
}
