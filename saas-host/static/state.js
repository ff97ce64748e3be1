// The dashboard's state, shared by its pages: what the server last said and
// what the Operate view is showing.

export const S = {
  dashboard: null,
  models: [],
  view: null,
  selectedId: null,
  selected: null, // model object of the Operate view
  qt: { offset: 0, limit: 25, total: 0, rows: [] },
  qIndex: new Map(), // stateKey -> q_values, every state this page has seen
  returns: [],
  stats: null,
  es: null,
  esModel: null,
  esRetry: null,
  flashAfterLoad: null, // {key, action} of an event whose row the next status load brings
  demo: null, // {controller}
  demoAgent: null,
  demoBudgetTouched: false,
  demoSizeTouched: false,
  editing: null, // model being edited, or null when creating
  authMode: 'login',
};
