/** @type {AppTypes.Config} */
// OHIF configuration for the end-to-end test: one DICOMweb data source, the
// Haneul server under test. serve.mjs replaces __DICOMWEB_ROOT__ (e.g.
// http://127.0.0.1:8042/dicom-web) and __WADO_URI_ROOT__ (…/wado).
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
