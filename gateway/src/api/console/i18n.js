// Strings of the console in Chinese and English. The choice is kept in localStorage.
const STRINGS = {
  zh: {
    'nav.map': '风险地图', 'nav.points': '测点', 'nav.tickets': '隐患',
    'logout': '退出',
    'login.title': '登录', 'login.help': '请输入访问令牌。', 'login.submit': '登录',
    'login.bad': '令牌无效', 'login.forbidden': '权限不足',
    'map.title': '四色风险分布图',
    'colour.red': '重大风险', 'colour.orange': '较大风险', 'colour.yellow': '一般风险', 'colour.blue': '低风险',
    'alarms.title': '报警', 'alarms.raised': '时间', 'alarms.point': '位号', 'alarms.message': '内容',
    'alarms.priority': '优先级', 'alarms.state': '状态', 'alarms.none': '无未处理报警',
    'alarms.ack': '确认', 'alarms.shelve': '搁置', 'alarms.shelve_reason': '搁置原因', 'alarms.shelve_minutes': '搁置时长（分钟）',
    'alarms.comment': '备注', 'alarms.comment_prompt': '备注内容',
    'points.title': '测点', 'points.filter': '按位号、名称或区域筛选', 'points.tag': '位号', 'points.name': '名称',
    'points.value': '数值', 'points.quality': '质量', 'points.alarm': '报警', 'points.area': '区域',
    'tickets.title': '隐患排查治理', 'tickets.new_title': '新隐患标题', 'tickets.create': '登记隐患',
    'tickets.unavailable': '隐患功能不可用', 'tickets.move': '转为',
    'tickets.assignee': '整改责任人', 'tickets.deadline_days': '整改期限（天）', 'tickets.comment': '说明（做了什么、发现了什么）',
    'live.open': '实时', 'live.connecting': '连接中', 'live.closed': '已断开',
    'counts': (a, u) => `报警 ${a} · 未确认 ${u}`,
    'done': '已完成', 'failed': '失败',
    'state.active_unacked': '报警未确认', 'state.active_acked': '报警已确认', 'state.returned_unacked': '已恢复未确认',
    'state.normal': '正常', 'state.shelved': '已搁置', 'state.suppressed_by_design': '设计抑制',
    'state.out_of_service': '停用', 'state.latched': '锁存',
    'prio.low': '低', 'prio.medium': '中', 'prio.high': '高', 'prio.critical': '紧急',
    'ticket.found': '发现', 'ticket.dispatched': '已派发', 'ticket.rectifying': '整改中', 'ticket.rectified': '已整改',
    'ticket.verified': '已验收', 'ticket.closed': '已销号',
    'role.viewer': '只读', 'role.operator': '操作员', 'role.admin': '管理员',
  },
  en: {
    'nav.map': 'Risk map', 'nav.points': 'Points', 'nav.tickets': 'Hazards',
    'logout': 'Sign out',
    'login.title': 'Sign in', 'login.help': 'Enter your access token.', 'login.submit': 'Sign in',
    'login.bad': 'Unknown token', 'login.forbidden': 'Not allowed',
    'map.title': 'Four-colour risk map',
    'colour.red': 'Major', 'colour.orange': 'Significant', 'colour.yellow': 'Moderate', 'colour.blue': 'Low',
    'alarms.title': 'Alarms', 'alarms.raised': 'Raised', 'alarms.point': 'Point', 'alarms.message': 'Alarm',
    'alarms.priority': 'Priority', 'alarms.state': 'State', 'alarms.none': 'No open alarms',
    'alarms.ack': 'Acknowledge', 'alarms.shelve': 'Shelve', 'alarms.shelve_reason': 'Why shelve?', 'alarms.shelve_minutes': 'For how many minutes?',
    'alarms.comment': 'Comment', 'alarms.comment_prompt': 'Your note on this alarm',
    'points.title': 'Points', 'points.filter': 'Filter by tag, name or area', 'points.tag': 'Tag', 'points.name': 'Name',
    'points.value': 'Value', 'points.quality': 'Quality', 'points.alarm': 'Alarm', 'points.area': 'Area',
    'tickets.title': 'Hazard tickets', 'tickets.new_title': 'New hazard title', 'tickets.create': 'Report hazard',
    'tickets.unavailable': 'Tickets are not available', 'tickets.move': 'Move to',
    'tickets.assignee': 'Who rectifies it?', 'tickets.deadline_days': 'Deadline, in days from now', 'tickets.comment': 'Comment (what was done or found)',
    'live.open': 'live', 'live.connecting': 'connecting', 'live.closed': 'disconnected',
    'counts': (a, u) => `${a} alarms · ${u} unacknowledged`,
    'done': 'Done', 'failed': 'Failed',
    'state.active_unacked': 'active, unacked', 'state.active_acked': 'active, acked', 'state.returned_unacked': 'returned, unacked',
    'state.normal': 'normal', 'state.shelved': 'shelved', 'state.suppressed_by_design': 'suppressed',
    'state.out_of_service': 'out of service', 'state.latched': 'latched',
    'prio.low': 'low', 'prio.medium': 'medium', 'prio.high': 'high', 'prio.critical': 'critical',
    'ticket.found': 'Found', 'ticket.dispatched': 'Dispatched', 'ticket.rectifying': 'Rectifying', 'ticket.rectified': 'Rectified',
    'ticket.verified': 'Verified', 'ticket.closed': 'Closed',
    'role.viewer': 'viewer', 'role.operator': 'operator', 'role.admin': 'admin',
  },
};

let lang = localStorage.getItem('sentinel.lang') || ((navigator.language || 'zh').startsWith('zh') ? 'zh' : 'en');

export function t(key, ...args) {
  const v = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
  return typeof v === 'function' ? v(...args) : v;
}

export function language() { return lang; }

export function setLanguage(l) {
  lang = l === 'en' ? 'en' : 'zh';
  localStorage.setItem('sentinel.lang', lang);
  applyStatic();
}

/** Fill every element marked with data-i18n / data-i18n-placeholder. */
export function applyStatic() {
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = t(el.dataset.i18nPlaceholder);
  const button = document.getElementById('lang');
  if (button) button.textContent = lang === 'zh' ? 'English' : '中文';
}
