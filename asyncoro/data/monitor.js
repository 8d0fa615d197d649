/* asyncoro monitor: renders the JSON of /api/... on the Cluster, Node and Server pages.
 *
 * Every poll fetches the whole state the page shows, so any number of
 * browsers can watch at once. The poll interval and the "show arguments"
 * switch are the server's settings: changing them here changes them for all.
 * Nothing is fetched from anywhere but this server.
 */
'use strict';

(function () {
  const body = document.body;
  const page = body.dataset.page;

  // ------------------------------------------------------------ small helpers

  function $(selector, root) { return (root || document).querySelector(selector); }

  /* el('td', {class: 'num'}, 'text', childNode, ...): a DOM element; strings become text
     nodes (never HTML: arguments and names come from user code). */
  function el(tag, attrs) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'text') node.textContent = value;
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else if (key === 'style') node.style.cssText = value;
      else node.setAttribute(key, value === true ? '' : value);
    }
    for (let i = 2; i < arguments.length; i++) {
      const child = arguments[i];
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    return node;
  }

  function count(n) {
    return n ? el('span', {}, n.toLocaleString()) : el('span', {class: 'zero'}, '0');
  }

  function bytes(n) {
    if (n === null || n === undefined) return '\u2014';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(n >= 100 ? 0 : 1)) + '\u202f' + units[i];
  }

  function percent(n) {
    return n === null || n === undefined ? '\u2014' : n.toFixed(n >= 10 ? 0 : 1) + '%';
  }

  function clock(t) {
    if (!t) return '\u2014';
    return new Date(t * 1000).toLocaleTimeString([], {hour12: false});
  }

  function when(t) {
    if (!t) return '\u2014';
    const d = new Date(t * 1000);
    const today = new Date();
    const time = d.toLocaleTimeString([], {hour12: false});
    return d.toDateString() === today.toDateString() ? time :
      d.toLocaleDateString([], {month: 'short', day: 'numeric'}) + ' ' + time;
  }

  function duration(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return seconds + ' s';
    const m = Math.floor(seconds / 60), s = seconds % 60;
    if (m < 60) return m + ' min' + (s ? ' ' + s + ' s' : '');
    const h = Math.floor(m / 60);
    return h + ' h' + (m % 60 ? ' ' + (m % 60) + ' min' : '');
  }

  function pill(status) {
    const text = status || 'Unknown';
    return el('span', {class: 'pill s-' + text.toLowerCase()}, text);
  }

  function setPill(node, status) {
    node.className = 'pill s-' + String(status || 'unknown').toLowerCase();
    node.textContent = status || '';
  }

  function card(label, value, color, note) {
    return el('div', {class: 'card', style: color ? '--c:' + color : null},
      el('div', {class: 'label'}, label),
      el('div', {class: 'value'}, typeof value === 'number' ? value.toLocaleString() : value),
      note ? el('div', {class: 'note'}, note) : null);
  }

  function meter(value, text) {
    if (value === null || value === undefined) return el('span', {class: 'dim'}, '\u2014');
    const level = value < 10 ? ' crit' : value < 30 ? ' low' : '';
    return el('span', {class: 'meter' + level},
      el('i', {}, el('b', {style: 'width:' + Math.max(2, Math.min(100, value)) + '%'})), text);
  }

  function nodeHref(addr) { return '/node/' + encodeURIComponent(addr); }
  function serverHref(location) { return '/server/' + encodeURIComponent(location); }

  // ------------------------------------------------------------ talking to the server

  class RequestError extends Error {
    constructor(message, status) { super(message); this.status = status; }
  }

  async function request(method, url, data) {
    const options = {method: method, cache: 'no-store', headers: {Accept: 'application/json'}};
    if (data !== undefined) {
      options.headers['Content-Type'] = 'application/json';
      options.body = JSON.stringify(data);
    }
    let response;
    try {
      response = await fetch(url, options);
    } catch (err) {
      throw new RequestError('the monitor does not answer', 0);
    }
    let payload = null;
    try { payload = await response.json(); } catch (err) { payload = null; }
    if (!response.ok) {
      throw new RequestError((payload && payload.error) || response.status + ' ' + response.statusText,
                             response.status);
    }
    return payload;
  }

  // ------------------------------------------------------------ header, settings, polling

  const settings = {poll_sec: 10, show_coro_args: true};
  let timer = null;
  let refresh = function () {};

  function remember(kind, value) {
    try { localStorage.setItem('asyncoro-monitor-' + kind, value); } catch (err) { /* private mode */ }
  }

  function recall(kind) {
    try { return localStorage.getItem('asyncoro-monitor-' + kind); } catch (err) { return null; }
  }

  function buildHeader() {
    const top = $('#topbar');
    if (!top) return;
    const node = page === 'cluster' ? recall('node') : body.dataset.node || recall('node');
    const server = page === 'server' ? body.dataset.server : recall('server');
    const tab = function (name, href, detail) {
      const cls = page === name.toLowerCase() ? 'active' : null;
      if (!href) return el('span', {title: 'Choose one on the Cluster page first'}, name);
      return el('a', {href: href, class: cls, id: 'tab-' + name.toLowerCase()}, name,
        detail ? el('small', {}, detail) : null);
    };
    const poll = el('input', {type: 'number', id: 'poll-sec', min: 1, max: 3600, step: 1,
      value: settings.poll_sec, 'aria-label': 'Refresh interval in seconds'});
    const args = el('input', {type: 'checkbox', id: 'show-args'});
    top.append(
      el('a', {class: 'brand', href: '/'}, el('img', {src: '/static/favicon.svg', alt: ''}),
         'asyncoro', el('span', {}, 'monitor')),
      el('nav', {class: 'tabs', 'aria-label': 'Pages'},
         tab('Cluster', '/'),
         tab('Node', node ? nodeHref(node) : null, node),
         tab('Server', server ? serverHref(server) : null,
             server && page !== 'cluster' ? server.split(':').pop() : null)),
      el('div', {class: 'controls'},
         el('label', {title: 'How often every open page refreshes'}, 'Refresh every', poll, 's'),
         el('label', {title: 'Show coroutine arguments on Server pages'}, args, 'Show arguments'),
         el('span', {class: 'live', id: 'live'}, 'connecting\u2026')));
    poll.addEventListener('change', function () {
      change({poll_sec: poll.value});
    });
    args.addEventListener('change', function () {
      change({show_coro_args: args.checked});
    });
  }

  async function change(update) {
    try {
      applySettings(await request('POST', '/api/settings', update));
      refresh();
    } catch (err) {
      applySettings(settings);
      live(false, err.message);
    }
  }

  function applySettings(data) {
    if (!data) return;
    if (typeof data.poll_sec === 'number') settings.poll_sec = data.poll_sec;
    if (typeof data.show_coro_args === 'boolean') settings.show_coro_args = data.show_coro_args;
    const poll = $('#poll-sec'), args = $('#show-args');
    if (poll && document.activeElement !== poll) poll.value = settings.poll_sec;
    if (args) args.checked = settings.show_coro_args;
  }

  function live(ok, text) {
    const node = $('#live');
    if (!node) return;
    node.className = 'live ' + (ok ? 'ok' : 'bad');
    node.textContent = ok ? 'Updated ' + clock(Date.now() / 1000) : text;
    node.title = ok ? 'Refreshes every ' + settings.poll_sec + ' s' : text;
  }

  /* Call load() now and every poll interval; load returns the JSON it rendered. */
  function poll(load) {
    async function tick() {
      clearTimeout(timer);
      try {
        applySettings(await load());
        live(true);
      } catch (err) {
        live(false, err.status === 404 ? 'Not known any more' : 'Offline \u2014 retrying');
        if (err.status === 404) gone(err.message);
      }
      timer = setTimeout(tick, settings.poll_sec * 1000);
    }
    refresh = tick;
    tick();
  }

  function gone(message) {
    const banner = $('#gone');
    if (!banner) return;
    banner.hidden = false;
    banner.textContent = message + ' \u2014 it may belong to a computation that ended. ';
    banner.append(el('a', {href: '/'}, 'Back to the cluster'));
  }

  function ungone() {
    const banner = $('#gone');
    if (banner) banner.hidden = true;
  }

  // ------------------------------------------------------------ sortable tables

  function ipKey(text) {
    const parts = String(text).split('.');
    if (parts.length === 4 && parts.every(function (p) { return /^\d+$/.test(p); })) {
      return parts.map(function (p) { return p.padStart(3, '0'); }).join('.');
    }
    return String(text);
  }

  function locationKey(text) {
    const i = String(text).lastIndexOf(':');
    return ipKey(String(text).slice(0, i)) + ':' + String(text).slice(i + 1).padStart(5, '0');
  }

  /* Click a header to sort by it, again to reverse; remembered per table. */
  function sorter(table, name, initial, onChange) {
    let sort = initial;
    try { sort = JSON.parse(recall('sort-' + name)) || initial; } catch (err) { sort = initial; }
    const heads = table.querySelectorAll('th[data-key]');
    function mark() {
      heads.forEach(function (th) {
        if (th.dataset.key === sort.key) th.setAttribute('aria-sort', sort.dir > 0 ? 'ascending' : 'descending');
        else th.removeAttribute('aria-sort');
      });
    }
    heads.forEach(function (th) {
      th.tabIndex = 0;
      const pick = function () {
        if (sort.key === th.dataset.key) sort = {key: sort.key, dir: -sort.dir};
        else sort = {key: th.dataset.key, dir: th.dataset.type ? 1 : -1};
        remember('sort-' + name, JSON.stringify(sort));
        mark();
        onChange();
      };
      th.addEventListener('click', pick);
      th.addEventListener('keydown', function (e) { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); pick(); } });
    });
    mark();
    return function (rows, value, tieKey) {
      const th = table.querySelector('th[data-key="' + sort.key + '"]');
      const type = th ? th.dataset.type : null;
      const key = function (row, k, t) {
        const v = value(row, k);
        if (t === 'ip') return ipKey(v);
        if (t === 'location') return locationKey(v);
        return v;
      };
      return rows.slice().sort(function (a, b) {
        let x = key(a, sort.key, type), y = key(b, sort.key, type);
        if (x === null || x === undefined) x = type ? '' : -Infinity;
        if (y === null || y === undefined) y = type ? '' : -Infinity;
        let c = typeof x === 'string' ? x.localeCompare(y) : x - y;
        if (c === 0 && tieKey) c = String(key(a, tieKey, 'ip')).localeCompare(String(key(b, tieKey, 'ip')));
        return c * sort.dir;
      });
    };
  }

  function fill(tbody, rows) {
    tbody.replaceChildren.apply(tbody, rows);
  }

  // ------------------------------------------------------------ Cluster page

  function clusterPage() {
    const table = $('#nodes-table');
    let last = null;
    const sorted = sorter(table, 'nodes', {key: 'ip_addr', dir: -1}, function () { if (last) render(last); });

    function value(node, key) {
      if (key === 'cpu' || key === 'memory') return node.avail_info ? node.avail_info[key] : null;
      return node[key];
    }

    function render(data) {
      last = data;
      const comp = data.computation;
      const sub = $('#computation');
      sub.replaceChildren();
      if (data.mode === 'scheduler') {
        sub.append(data.scheduler ? el('span', {}, 'Scheduler ', el('b', {class: 'mono'}, data.scheduler))
                                  : el('span', {}, 'Looking for the discoro scheduler\u2026'),
                   el('span', {class: 'sep'}, '\u00b7'));
      }
      if (comp) {
        sub.append('Computation ', el('b', {class: 'mono'}, String(comp.id)));
        if (comp.client) sub.append(el('span', {class: 'sep'}, '\u00b7'), 'client ', el('b', {class: 'mono'}, comp.client));
        sub.append(el('span', {class: 'sep'}, '\u00b7'), pill(comp.status === 'closed' ? 'Closed' : 'Running'));
        if (comp.since) sub.append(el('span', {class: 'sep'}, '\u00b7'), 'since ' + when(comp.since));
      } else {
        sub.append('No computation is running.');
      }
      const live = data.nodes.filter(function (n) { return n.status !== 'Closed' && n.status !== 'Disconnected'; }).length;
      fill($('#cards'), [
        card('Submitted', data.coros_submitted, '#5b8def', 'coroutines so far'),
        card('Done', data.coros_done, '#16875a', 'finished or terminated'),
        card('Running', data.coros_running, '#e49b2c', 'right now'),
        card('Nodes', live, '#7a5af8', data.nodes.length > live ? (data.nodes.length - live) + ' closed' : 'in use'),
        card('Servers', data.servers, '#0e9aa7', 'processes running')]);
      const rows = sorted(data.nodes, value, 'ip_addr').map(function (node) {
        const avail = node.avail_info || {};
        return el('tr', {'data-node': node.ip_addr},
          el('td', {class: 'node-cell'}, el('a', {href: nodeHref(node.ip_addr)}, node.ip_addr),
             node.name && node.name !== node.ip_addr ? el('span', {class: 'name'}, node.name) : null),
          el('td', {}, pill(node.status)),
          el('td', {class: 'num'}, count(node.servers)),
          el('td', {class: 'num'}, count(node.coros_submitted)),
          el('td', {class: 'num'}, count(node.coros_done)),
          el('td', {class: 'num strong'}, count(node.coros_running)),
          el('td', {class: 'num'}, meter(avail.cpu, percent(avail.cpu))),
          el('td', {class: 'num'}, avail.memory === undefined ? el('span', {class: 'dim'}, '\u2014') : bytes(avail.memory)));
      });
      fill(table.tBodies[0], rows);
      $('#nodes-empty').hidden = rows.length > 0;
      const queue = data.queue || [];
      $('#queue-panel').hidden = data.mode !== 'scheduler' || queue.length === 0;
      fill($('#queue-table').tBodies[0], queue.map(function (entry, i) {
        return el('tr', {}, el('td', {}, i + 1), el('td', {class: 'mono'}, String(entry.id)),
                  el('td', {class: 'mono'}, entry.client));
      }));
      return data;
    }

    poll(async function () { return render(await request('GET', '/api/cluster')); });
  }

  // ------------------------------------------------------------ Node page

  const CHARTS = [
    {label: 'CPU idle', index: 1, color: '#2f6fed', max: 100, format: percent},
    {label: 'Memory free', index: 2, color: '#16875a', format: bytes},
    {label: 'Disk free', index: 3, color: '#7a5af8', format: bytes},
    {label: 'Swap free', index: 4, color: '#e08a1e', max: 100, format: percent}];

  function chartTile(spec, history) {
    const points = history.filter(function (s) { return s[spec.index] !== null && s[spec.index] !== undefined; })
                          .map(function (s) { return [s[0], s[spec.index]]; });
    const current = points.length ? points[points.length - 1][1] : null;
    const tile = el('div', {class: 'chart', style: '--c:' + spec.color, 'data-chart': spec.label},
      el('div', {class: 'top'}, el('span', {class: 'label'}, spec.label),
         el('span', {class: 'value'}, spec.format(current))));
    if (!points.length) {
      tile.append(el('div', {class: 'none'}, 'not reported by this node'));
      return tile;
    }
    const W = 300, H = 74;
    const values = points.map(function (p) { return p[1]; });
    const low = Math.min.apply(null, values), high = Math.max.apply(null, values);
    const top = spec.max || (high > 0 ? high * 1.15 : 1);
    const t0 = points[0][0], t1 = points[points.length - 1][0];
    const span = t1 - t0;
    const x = function (t) { return span > 0 ? (t - t0) / span * W : W; };
    const y = function (v) { return H - Math.max(0, Math.min(1, v / top)) * H; };
    const chart = svg('svg', {viewBox: '0 0 ' + W + ' ' + H, preserveAspectRatio: 'none', role: 'img',
                              'aria-label': spec.label + ' over time'});
    [0.25, 0.5, 0.75].forEach(function (f) {
      chart.append(svg('line', {class: 'grid-line', x1: 0, x2: W, y1: H * f, y2: H * f}));
    });
    let line;
    if (points.length === 1) {
      line = 'M0,' + y(values[0]) + ' L' + W + ',' + y(values[0]);
    } else {
      line = points.map(function (p, i) { return (i ? 'L' : 'M') + x(p[0]).toFixed(1) + ',' + y(p[1]).toFixed(1); }).join(' ');
    }
    const startX = points.length === 1 ? 0 : x(t0);
    chart.append(svg('path', {class: 'area', d: line + ' L' + W + ',' + H + ' L' + startX + ',' + H + ' Z'}));
    chart.append(svg('path', {class: 'line', d: line}));
    tile.append(chart);
    tile.append(el('div', {class: 'foot'},
      el('span', {}, span >= 1 ? 'last ' + duration(span) : 'one report'),
      el('span', {title: 'lowest and highest'}, low === high ? spec.format(low) : spec.format(low) + ' \u2013 ' + spec.format(high))));
    return tile;
  }

  function nodePage() {
    const addr = body.dataset.node;
    remember('node', addr);
    const table = $('#servers-table');
    let last = null;
    const sorted = sorter(table, 'servers', {key: 'location', dir: 1}, function () { if (last) render(last); });

    function render(data) {
      last = data;
      ungone();
      setPill($('#status'), data.status);
      const sub = $('#node-sub');
      sub.replaceChildren(el('b', {}, data.name || data.ip_addr));
      if (data.platform) sub.append(el('span', {class: 'sep'}, '\u00b7'), data.platform);
      if (data.cpus) sub.append(el('span', {class: 'sep'}, '\u00b7'), data.cpus + ' server' + (data.cpus === 1 ? '' : 's') + ' offered');
      const up = data.servers.filter(function (s) { return ['Closed', 'Disconnected', 'Ignore'].indexOf(s.status) < 0; });
      fill($('#cards'), [
        card('Servers', up.length, '#0e9aa7', data.servers.length > up.length ? (data.servers.length - up.length) + ' closed' : 'running'),
        card('Submitted', data.coros_submitted, '#5b8def', 'coroutines'),
        card('Done', data.coros_done, '#16875a', 'finished or terminated'),
        card('Running', data.coros_running, '#e49b2c', 'right now')]);
      const history = data.history || [];
      fill($('#charts'), CHARTS.map(function (spec) { return chartTile(spec, history); }));
      $('#avail-hint').textContent = history.length ?
        history.length + ' report' + (history.length === 1 ? '' : 's') + ' \u00b7 latest ' + clock(history[history.length - 1][0]) :
        'The node reports its load at every pulse of the computation.';
      const rows = sorted(data.servers, function (s, k) { return s[k]; }, 'location').map(function (server) {
        return el('tr', {'data-server': server.location},
          el('td', {class: 'node-cell'}, el('a', {href: serverHref(server.location)}, server.location)),
          el('td', {}, pill(server.status)),
          el('td', {class: 'num'}, count(server.coros_submitted)),
          el('td', {class: 'num'}, count(server.coros_done)),
          el('td', {class: 'num strong'}, count(server.coros_running)));
      });
      fill(table.tBodies[0], rows);
      $('#servers-empty').hidden = rows.length > 0;
      return data;
    }

    poll(async function () { return render(await request('GET', '/api/node/' + encodeURIComponent(addr))); });
  }

  // ------------------------------------------------------------ Server page

  const LIMIT = 500;

  function serverPage() {
    const location = body.dataset.server;
    remember('server', location);
    remember('node', body.dataset.node);
    const selected = new Set();
    let running = [];
    const button = $('#terminate'), all = $('#select-all');

    function updateSelection() {
      const n = selected.size;
      button.disabled = n === 0;
      button.textContent = n ? 'Terminate ' + n + ' selected' : 'Terminate selected';
      $('#selection').textContent = n ? n + ' of ' + running.length + ' selected' : 'Select coroutines to terminate them';
      all.checked = n > 0 && n === running.length;
      all.indeterminate = n > 0 && n < running.length;
      document.querySelectorAll('#coros-table tbody tr').forEach(function (tr) {
        tr.classList.toggle('selected', selected.has(tr.dataset.coro));
      });
    }

    all.addEventListener('change', function () {
      running.forEach(function (c) { if (all.checked) selected.add(c.coro); else selected.delete(c.coro); });
      document.querySelectorAll('#coros-table tbody input').forEach(function (box) { box.checked = all.checked; });
      updateSelection();
    });

    button.addEventListener('click', async function () {
      const coros = Array.from(selected);
      button.disabled = true;
      const banner = $('#result');
      try {
        const result = await request('POST', '/api/terminate', {coro: coros});
        result.terminated.forEach(function (c) { selected.delete(c); });
        result.finished.forEach(function (f) { selected.delete(f.coro); });
        result.unknown.forEach(function (c) { selected.delete(c); });
        banner.className = 'banner ' + (result.terminated.length && !result.failed.length ? 'ok' : 'warn');
        banner.textContent = result.message.charAt(0).toUpperCase() + result.message.slice(1) + '.';
      } catch (err) {
        banner.className = 'banner bad';
        banner.textContent = 'Could not terminate: ' + err.message;
      }
      banner.hidden = false;
      clearTimeout(banner.timer);
      banner.timer = setTimeout(function () { banner.hidden = true; }, 15000);
      refresh();
    });

    function render(data) {
      ungone();
      running = data.coros;
      const known = new Set(running.map(function (c) { return c.coro; }));
      selected.forEach(function (c) { if (!known.has(c)) selected.delete(c); });
      setPill($('#status'), data.status);
      const sub = $('#server-sub');
      sub.replaceChildren('On node ', el('a', {href: nodeHref(data.node)}, el('b', {class: 'mono'}, data.node)));
      if (data.name && data.name !== data.node) sub.append(' (' + data.name + ')');
      fill($('#cards'), [
        card('Submitted', data.coros_submitted, '#5b8def', 'coroutines'),
        card('Done', data.coros_done, '#16875a', 'finished or terminated'),
        card('Running', data.coros_running, '#e49b2c', 'right now')]);
      const now = data.time;
      fill($('#coros-table').tBodies[0], running.map(function (c) {
        const box = el('input', {type: 'checkbox', 'aria-label': 'Select ' + c.coro});
        box.checked = selected.has(c.coro);
        box.addEventListener('change', function () {
          if (box.checked) selected.add(c.coro); else selected.delete(c.coro);
          updateSelection();
        });
        const args = data.show_coro_args ?
          el('td', {class: 'args'}, [c.args, c.kwargs].filter(Boolean).join(', ') || el('span', {class: 'dim'}, 'none')) :
          el('td', {class: 'dim', title: 'Turn on \u201cShow arguments\u201d to see them'}, 'hidden');
        return el('tr', {'data-coro': c.coro},
          el('td', {class: 'check'}, box),
          el('td', {class: 'coro'}, c.coro),
          el('td', {class: 'strong'}, c.name),
          args,
          el('td', {}, when(c.start_time)),
          el('td', {class: 'num'}, duration(now - c.start_time)));
      }));
      $('#coros-empty').hidden = running.length > 0;
      const more = $('#coros-more');
      more.hidden = data.coros_running <= running.length;
      more.textContent = 'Showing the ' + running.length + ' oldest of ' + data.coros_running + ' running coroutines.';
      fill($('#recent-table').tBodies[0], data.recent.map(function (c) {
        const outcome = c.how.split(':')[0].split(' ')[0];
        return el('tr', {'data-coro': c.coro},
          el('td', {class: 'coro'}, c.coro),
          el('td', {class: 'strong'}, c.name),
          el('td', {}, when(c.start_time)),
          el('td', {}, when(c.end_time)),
          el('td', {class: 'num'}, duration(c.end_time - c.start_time)),
          el('td', {class: 'outcome-' + outcome}, c.how));
      }));
      $('#recent-empty').hidden = data.recent.length > 0;
      updateSelection();
      return data;
    }

    poll(async function () {
      return render(await request('GET', '/api/server/' + encodeURIComponent(location) + '?limit=' + LIMIT));
    });
  }

  // ------------------------------------------------------------ start

  buildHeader();
  if (page === 'cluster') clusterPage();
  else if (page === 'node') nodePage();
  else if (page === 'server') serverPage();
})();
