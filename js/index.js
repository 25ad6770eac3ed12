// opensig for bundlers: `import { Signal } from 'opensig'` (or the default export).
// `Signal(appid)` works with and without `new`, exactly as with AgoraSigSDK.min.js.
import { Signal as Impl, Session, Channel, Call } from './opensig.js';

export function Signal(appid, options) {
  return new Impl(appid, options);
}
Signal.prototype = Impl.prototype;

export { Session, Channel, Call };
export default Signal;
