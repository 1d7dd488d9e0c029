// Teller page helpers shared by the agent desk, the wallboard and the customer page:
// the UI text per language and the REST helper. Plain ES2020, no build step; load it
// with <script src="/static/teller-page.js"> before the page's own script. It defines
// `window.TellerPage`.
//
//   const texts = TellerPage.texts(STRINGS, lang)   STRINGS: {en: {...}, zh: {...}, ...};
//                                   lang: the first language (English when not in STRINGS).
//     texts.lang                    the current language.
//     texts.t(key, vars?)           the text in the current language, else English, else the
//                                   key; "{name}" is replaced by vars.name.
//     texts.tOr(key, fallback)      the same, with `fallback` where no language has the key.
//     texts.use(lang)               switch language; false when unknown or already the one.
//     texts.apply()                 <html lang>, the title and every [data-i18n] (text),
//                                   [data-i18n-label] (aria-label), [data-i18n-placeholder]
//                                   and [data-lang] (aria-pressed) node.
//     texts.keepInUrl()             put the language in the address (?lang=), for a reload.
//   TellerPage.withQuality(STRINGS)   STRINGS plus the texts of quality alerts, levels and
//                                   tiers (the page's own keys win).
//   const api = TellerPage.api({ token, text })
//     token()                       the bearer token to send (null: none).
//     text(key, vars)               the page's wording: "unreachable", "refused" {status}.
//   await api(method, path, body?, token?)  JSON in and out; throws a TellerPage.PageError
//                                   {message, code, status} (code "unreachable" when the
//                                   request did not get through).
"use strict";

(() => {
  class PageError extends Error {
    constructor(message, code = "", status = 0) {
      super(message);
      this.code = code;
      this.status = status;
    }
  }

  function texts(strings, first) {
    const self = {
      lang: strings[first] ? first : "en",
      t(key, vars = {}) {
        return String(strings[self.lang][key] ?? strings.en[key] ?? key)
          .replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
      },
      tOr(key, fallback) {
        return strings[self.lang][key] ?? strings.en[key] ?? fallback;
      },
      use(lang) {
        if (!strings[lang] || lang === self.lang) return false;
        self.lang = lang;
        return true;
      },
      apply() {
        const t = self.t;
        document.documentElement.lang = t("htmlLang");
        document.title = t("title");
        for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
        for (const node of document.querySelectorAll("[data-i18n-label]")) node.setAttribute("aria-label", t(node.dataset.i18nLabel));
        for (const node of document.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
        for (const button of document.querySelectorAll("[data-lang]")) button.setAttribute("aria-pressed", String(button.dataset.lang === self.lang));
      },
      keepInUrl() {
        const url = new URL(location.href);
        url.searchParams.set("lang", self.lang);
        history.replaceState(null, "", url);
      },
    };
    return self;
  }

  function api({ token: currentToken = () => null, text }) {
    return async (method, path, body, token = currentToken()) => {
      const headers = {};
      if (body !== undefined) headers["Content-Type"] = "application/json";
      if (token) headers.Authorization = `Bearer ${token}`;
      let response;
      try {
        response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      } catch {
        throw new PageError(text("unreachable"), "unreachable");
      }
      const data = await response.json().catch(() => ({}));
      if (!response.ok) {
        const error = data.error || {};
        throw new PageError(error.message || text("refused", { status: response.status }), error.code, response.status);
      }
      return data;
    };
  }


  // What the quality messages say (docs/quality.md), the same on every page that shows them.
  const QUALITY_TEXTS = {
    zh: {
      alert_audio_poor: "{whose}声音可能断续（MOS {mos}）：请对方复述关键信息",
      alert_high_jitter: "{whose}网络不稳定（抖动 {jitter} 毫秒）",
      alert_high_latency: "{whose}网络延迟较高（往返 {rtt} 毫秒）：请在对话间稍作停顿",
      alert_network_poor: "{whose}网络较差：建议改为纯语音",
      alert_video_frozen: "{whose}画面已卡住（{frozen} 秒）：建议改为纯语音",
      alert_video_poor: "{whose}画面卡顿（{fps} 帧/秒）",
      level_fair: "一般",
      level_good: "良好",
      level_poor: "较差",
      level_unknown: "—",
      whose_customer: "客户",
      whose_other: "{name}的",
      tier_audio_only: "仅语音",
      tier_full: "原画",
      tier_low: "低清",
      tier_medium: "中清",
    },
    en: {
      alert_audio_poor: "{whose} voice may break up (MOS {mos}): ask them to repeat key facts",
      alert_high_jitter: "{whose} connection is unsteady (jitter {jitter} ms)",
      alert_high_latency: "{whose} connection is slow (round trip {rtt} ms): pause between turns",
      alert_network_poor: "{whose} network is poor: suggest audio only",
      alert_video_frozen: "{whose} picture is frozen ({frozen} s): suggest audio only",
      alert_video_poor: "{whose} picture is choppy ({fps} fps)",
      level_fair: "fair",
      level_good: "good",
      level_poor: "poor",
      level_unknown: "—",
      whose_customer: "Customer's",
      whose_other: "{name}'s",
      tier_audio_only: "audio only",
      tier_full: "full",
      tier_low: "low",
      tier_medium: "medium",
    },
  };

  // `strings` with the quality texts added; a page's own key of the same name wins.
  function withQuality(strings) {
    const out = {};
    for (const lang of Object.keys(strings)) out[lang] = { ...(QUALITY_TEXTS[lang] || QUALITY_TEXTS.en), ...strings[lang] };
    return out;
  }

  window.TellerPage = { PageError, texts, api, withQuality };
})();
