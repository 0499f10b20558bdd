"""Physical constants in OpenMM's units (nm, ps, kJ/mol, K, amu), defined once for the package."""

#: Molar gas constant R = k_B·N_A in kJ/mol/K (OpenMM's ``MOLAR_GAS_CONSTANT_R``): kT = GAS_CONSTANT · T,
#: 2.494 kJ/mol at 300 K.
GAS_CONSTANT = 0.00831446261815324
