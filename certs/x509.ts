/** The one entry to @peculiar/x509 inside certs/: guarantees the Reflect polyfill loads first. */
// @peculiar/x509 resolves its algorithm providers through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata';

export * from '@peculiar/x509';
