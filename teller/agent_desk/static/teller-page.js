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

  window.TellerPage = { PageError, texts, api };
})();
