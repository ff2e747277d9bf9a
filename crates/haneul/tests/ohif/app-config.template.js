/** @type {AppTypes.Config} */
// OHIF configuration for the end-to-end test: one DICOMweb data source, the
// Haneul server under test. serve.mjs replaces __DICOMWEB_ROOT__ (e.g.
// http://127.0.0.1:8042/dicom-web) and __WADO_URI_ROOT__ (…/wado).
// Credentials for Haneul. A deployment signs users in with OHIF's `oidc`
// settings and sends the identity provider's JWT as a Bearer token, which
// Haneul checks against the provider's keys ([http.oidc]). The test has no
// identity provider, so it sends an API token the same way: serve.mjs puts
// it in __HANEUL_AUTHORIZATION__, and every request to Haneul's origin (the
// DICOMweb client's XHRs and the thumbnail fetches) carries it.
(function sendCredentialsToHaneul() {
  const authorization = '__HANEUL_AUTHORIZATION__';
  const haneul = new URL('__DICOMWEB_ROOT__').origin;
  const toHaneul = url => {
    try {
      return new URL(url, window.location.href).origin === haneul;
    } catch {
      return false;
    }
  };
  const { open, send } = XMLHttpRequest.prototype;
  XMLHttpRequest.prototype.open = function (method, url, ...rest) {
    this.haneulCredentials = toHaneul(url);
    return open.call(this, method, url, ...rest);
  };
  XMLHttpRequest.prototype.send = function (body) {
    if (this.haneulCredentials) {
      this.setRequestHeader('Authorization', authorization);
    }
    return send.call(this, body);
  };
  const fetchWithoutCredentials = window.fetch.bind(window);
  window.fetch = (input, init = {}) => {
    const url = input instanceof Request ? input.url : String(input);
    if (!toHaneul(url)) {
      return fetchWithoutCredentials(input, init);
    }
    const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
    headers.set('Authorization', authorization);
    return fetchWithoutCredentials(input, { ...init, headers });
  };
})();

window.config = {
  name: 'haneul-e2e',
  routerBasename: null,
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  // The test serves the viewer cross-origin isolated (COOP/COEP), so no
  // warning banner is expected; keep the default checks on.
  showWarningMessageForCrossOrigin: true,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  experimentalStudyBrowserSort: false,
  strictZSpacingForVolumeViewport: true,
  groupEnabledModesFirst: true,
  investigationalUseDialog: { option: 'never' },
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 25 },
  showErrorDetails: 'always',
  defaultDataSourceName: 'haneul',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'haneul',
      configuration: {
        friendlyName: 'Haneul',
        name: 'haneul',
        qidoRoot: '__DICOMWEB_ROOT__',
        wadoRoot: '__DICOMWEB_ROOT__',
        wadoUriRoot: '__WADO_URI_ROOT__',
        qidoSupportsIncludeField: true,
        supportsReject: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'thumbnail',
        thumbnailRequestStrategy: 'fetch',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: true,
        supportsWildcard: true,
        staticWado: false,
        singlepart: 'bulkdata,video',
        bulkDataURI: { enabled: true, relativeResolution: 'studies' },
        // Send Accept: multipart/related; type="application/octet-stream"
        // with the quotes, as PS3.18 writes it.
        omitQuotationForMultipartRequest: false,
      },
    },
  ],
};
